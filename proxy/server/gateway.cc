// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/gateway.h"

#include <openssl/crypto.h>

#include <thread>

#include "protocol/pop3/pop3_command.h"
#include "proxy/base/log.h"
#include "proxy/server/process_stats.h"
#include "proxy/server/version.h"

namespace popbridge::proxy {
namespace {

constexpr unsigned kFilePollMs = 5'000;
// cert and key are replaced together; one reload for both.
constexpr std::uint64_t kReloadDebounceMs = 500;

bool same_listeners(const config::Config& a, const config::Config& b) {
  if (a.listeners.size() != b.listeners.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.listeners.size(); ++i) {
    const config::Listener& x = a.listeners[i];
    const config::Listener& y = b.listeners[i];
    if (x.name != y.name || x.address.to_string() != y.address.to_string() || x.tls != y.tls ||
        x.proxy_protocol != y.proxy_protocol) {
      return false;
    }
  }
  return true;
}

std::size_t worker_count(const config::Config& config) {
  if (config.workers > 0) {
    return config.workers;
  }
  const unsigned cores = std::thread::hardware_concurrency();
  return cores == 0 ? 1 : cores;
}

}  // namespace

Gateway::Gateway(std::string config_path, config::Config config, std::string log_level)
    : config_path_(std::move(config_path)),
      log_level_(std::move(log_level)),
      loop_(uv_default_loop()),
      deferred_delete_(std::make_unique<DeferredDelete>(loop_)) {
  std::vector<std::string> listener_names;
  for (const config::Listener& listener : config.listeners) {
    listener_names.push_back(listener.name);
  }
  std::vector<std::string_view> verbs;
  for (std::size_t verb = 0; verb < protocol::kPop3VerbCount; ++verb) {
    verbs.push_back(protocol::verb_name(static_cast<protocol::Pop3Verb>(verb)));
  }
  metrics_ = std::make_unique<metrics::Metrics>(registry_, listener_names, verbs, kVersion,
                                                kRevision, OpenSSL_version(OPENSSL_VERSION));
  std::string error;
  settings_ = make_settings(std::move(config), error);
  if (!settings_) {
    log::error("startup_failed", {{"reason", error}});
    return;
  }
  log::configure(settings_->config.logging, settings_->identity->user_hash_key);
}

Gateway::~Gateway() {
  for (auto& worker : workers_) {
    worker->post_stop();
  }
  workers_.clear();  // joins
  close_main_handles();
  deferred_delete_.reset();
  uv_run(loop_, UV_RUN_DEFAULT);
}

int Gateway::run() {
  std::string error;
  if (!settings_ || !start(error)) {
    if (!error.empty()) {
      log::error("startup_failed", {{"reason", error}});
    }
    for (auto& worker : workers_) {
      worker->post_stop();
    }
    return 1;
  }
  log::info("started", {{"version", kVersion},
                        {"revision", kRevision},
                        {"tls_library", OpenSSL_version(OPENSSL_VERSION)},
                        {"workers", workers_.size()}});
  service_manager_->ready(ready_status());
  uv_run(loop_, UV_RUN_DEFAULT);
  for (auto& worker : workers_) {
    worker->join();
  }
  log::info("stopped", {{"exit_code", exit_code_}});
  return exit_code_;
}

bool Gateway::start(std::string& error) {
  stopped_ = std::make_unique<UvHandle<uv_async_t>>([this](uv_async_t* handle) {
    return uv_async_init(loop_, handle, [](uv_async_t* async) noexcept {
      if (auto* self = static_cast<Gateway*>(async->data)) {
        self->worker_stopped();
      }
    });
  });
  stopped_->get()->data = this;

  // Signals first: a SIGTERM that arrives while the workers start must drain, not kill
  // the process by the default action. Their callbacks run once the main loop runs,
  // when every worker exists.
  auto make_signal = [this](int number, uv_signal_cb callback) {
    auto handle = std::make_unique<UvHandle<uv_signal_t>>(
        [this](uv_signal_t* h) { return uv_signal_init(loop_, h); });
    handle->get()->data = this;
    uv_signal_start(handle->get(), callback, number);
    return handle;
  };
  auto on_stop_signal = [](uv_signal_t* handle, int number) noexcept {
    if (auto* self = static_cast<Gateway*>(handle->data)) {
      self->begin_drain(number);
    }
  };
  sigterm_ = make_signal(SIGTERM, on_stop_signal);
  sigint_ = make_signal(SIGINT, on_stop_signal);
  sighup_ = make_signal(SIGHUP, [](uv_signal_t* handle, int) noexcept {
    if (auto* self = static_cast<Gateway*>(handle->data)) {
      self->reload("SIGHUP");
    }
  });
  reload_debounce_ = std::make_unique<Timer>(loop_);
  service_manager_ = std::make_unique<ServiceManager>(loop_);

  for (const config::Listener& listener : settings_->config.listeners) {
    std::optional<ListenLock> lock = ListenLock::acquire(listener.address, error);
    if (!lock) {
      error = "listener " + listener.name + " (" + listener.address.to_string() + "): " + error;
      return false;
    }
    listen_locks_.push_back(std::move(*lock));
  }
  const std::size_t count = worker_count(settings_->config);
  for (std::size_t index = 0; index < count; ++index) {
    auto worker = std::make_unique<Worker>(index, settings_, *metrics_, open_sessions_, guard_,
                                           mailboxes_, tokens_, [this] {
                                             --workers_running_;
                                             uv_async_send(stopped_->get());
                                           });
    ++workers_running_;
    if (!worker->start(error)) {
      --workers_running_;
      return false;
    }
    workers_.push_back(std::move(worker));
  }

  if (settings_->config.metrics.address) {
    admin_ = std::make_unique<AdminServer>(
        loop_, AdminServer::Hooks{[this] {
                                    metrics_->ready.Set(ready() ? 1 : 0);
                                    metrics_->set_process(sample_process());
                                    return metrics::expose(registry_);
                                  },
                                  [this] { return ready(); }});
    if (!admin_->start(*settings_->config.metrics.address, error)) {
      return false;
    }
  }

  watch_files();
  memory_trimmer_ = std::make_unique<MemoryTrimmer>(loop_, open_sessions_);
  memory_trimmer_->start();
  start_probe();
  publish_certificate_expiry();
  return true;
}

bool Gateway::ready() const {
  if (draining_ || probe_ == nullptr || !probe_->reachable()) {
    return false;
  }
  for (const auto& worker : workers_) {
    if (!worker->listening()) {
      return false;
    }
  }
  return true;
}

void Gateway::start_probe() {
  const bool reachable = probe_ != nullptr && probe_->reachable();
  probe_ = std::make_unique<UpstreamProbe>(
      loop_, settings_->config.upstream, settings_->upstream_tls.get(),
      static_cast<std::uint64_t>(settings_->config.metrics.probe_interval.count()),
      settings_->config.metrics.probe_failures, reachable, settings_->egress_proxy);
  probe_->start();
}

void Gateway::begin_drain(int signal_number) {
  if (draining_) {
    // A second signal: stop waiting for sessions.
    log::warn("stopping_now", {{"signal", signal_number}});
    for (auto& worker : workers_) {
      worker->post_stop();
    }
    return;
  }
  draining_ = true;
  if (service_manager_) {
    service_manager_->stopping("draining " + std::to_string(open_sessions_.load()) + " sessions");
  }
  log::info("stopping", {{"signal", signal_number},
                         {"sessions", open_sessions_.load()},
                         {"drain_timeout_ms",
                          static_cast<long long>(settings_->config.limits.drain_timeout.count())}});
  for (auto& worker : workers_) {
    worker->post_drain(settings_->config.limits.drain_timeout);
  }
}

void Gateway::worker_stopped() {
  if (workers_running_.load() != 0) {
    return;
  }
  // Each worker's last act is to wake us; joining waits until it has returned from that,
  // so no thread can touch the wake-up handle once it is closed below.
  for (auto& worker : workers_) {
    worker->join();
  }
  close_main_handles();
}

void Gateway::close_main_handles() {
  admin_.reset();
  probe_.reset();
  memory_trimmer_.reset();
  service_manager_.reset();
  sigterm_.reset();
  sigint_.reset();
  sighup_.reset();
  file_watches_.clear();
  reload_debounce_.reset();
  stopped_.reset();
}

void Gateway::reload(std::string_view trigger) {
  if (draining_) {
    apply_reload(trigger);  // systemd already knows the process is stopping
    return;
  }
  service_manager_->reloading();
  apply_reload(trigger);
  // Ready again whether or not the new configuration was taken: the old one still serves.
  service_manager_->ready(ready_status());
}

std::string Gateway::ready_status() const {
  std::string status = "serving";
  for (const config::Listener& listener : settings_->config.listeners) {
    status += " " + listener.name + "=" + listener.address.to_string();
  }
  return status;
}

void Gateway::apply_reload(std::string_view trigger) {
  config::LoadResult loaded = config::load_config_file(config_path_);
  for (const config::Diagnostic& warning : loaded.warnings) {
    log::warn("config_warning", {{"problem", warning.to_string(config_path_)}});
  }
  auto reject = [&](std::string_view reason) {
    metrics_->reload_failure.Increment();
    log::error("reload_rejected", {{"trigger", trigger}, {"reason", reason}});
  };
  if (!loaded.config) {
    for (const config::Diagnostic& problem : loaded.errors) {
      log::error("config_error", {{"problem", problem.to_string(config_path_)}});
    }
    reject("invalid configuration; the running one stays in force");
    return;
  }
  if (!log_level_.empty()) {
    loaded.config->logging.level = log_level_;
  }
  if (!same_listeners(settings_->config, *loaded.config) ||
      worker_count(settings_->config) != worker_count(*loaded.config)) {
    reject("listeners or workers changed; that needs a restart");
    return;
  }
  std::string error;
  SettingsPtr settings = make_settings(std::move(*loaded.config), error);
  if (!settings) {
    reject(error);
    return;
  }
  settings_ = std::move(settings);
  log::configure(settings_->config.logging, settings_->identity->user_hash_key);
  for (auto& worker : workers_) {
    worker->post_settings(settings_);
  }
  start_probe();
  watch_files();
  publish_certificate_expiry();
  metrics_->reload_success.Increment();
  log::info("reloaded", {{"trigger", trigger}});
}

void Gateway::watch_files() {
  file_watches_.clear();
  // Certificates, and the files behind logins: each change reloads, as SIGHUP would.
  const config::Config& config = settings_->config;
  std::vector<std::pair<std::string, std::string_view>> paths;
  if (settings_->server_tls) {
    paths = {{config.tls.certificate, "certificate_changed"},
             {config.tls.private_key, "certificate_changed"}};
  }
  for (const std::string& path : {config.auth.users_file, config.upstream.login.credentials_file,
                                  config.upstream.login.master_password.file,
                                  config.upstream.login.oauth2.refresh_tokens_file,
                                  config.upstream.login.oauth2.client_secret.file}) {
    if (!path.empty()) {
      paths.emplace_back(path, "file_changed");
    }
  }
  for (const auto& [path, trigger] : paths) {
    auto watch = std::make_unique<FileWatch>(this, trigger, loop_);
    watch->handle.get()->data = watch.get();
    uv_fs_poll_start(
        watch->handle.get(),
        [](uv_fs_poll_t* handle, int status, const uv_stat_t*, const uv_stat_t*) noexcept {
          auto* watch = static_cast<FileWatch*>(handle->data);
          if (watch == nullptr || status != 0 || watch->gateway->draining_) {
            return;
          }
          Gateway* self = watch->gateway;
          const std::string_view trigger = watch->trigger;
          self->reload_debounce_->start(kReloadDebounceMs,
                                        [self, trigger] { self->reload(trigger); });
        },
        path.c_str(), kFilePollMs);
    file_watches_.push_back(std::move(watch));
  }
}

void Gateway::publish_certificate_expiry() {
  for (const std::string& warning : check_settings(*settings_).warnings) {
    log::warn("certificate_expiry", {{"problem", warning}});
  }
  if (!settings_->server_tls) {
    return;
  }
  if (auto expiry = certificate_expiry(settings_->server_tls.get())) {
    metrics_->certificate_expiry.Add({{"certificate", settings_->config.tls.certificate}})
        .Set(static_cast<double>(*expiry));
  }
}

}  // namespace popbridge::proxy
