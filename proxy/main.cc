// popbridge: a POP3-to-IMAP gateway. Reads the configuration, binds the listeners and
// runs the event loop until SIGTERM or SIGINT.
#include <CLI/CLI.hpp>
#include <openssl/crypto.h>
#include <prometheus/registry.h>
#include <uv.h>

#include <sys/resource.h>

#include <csignal>
#include <functional>
#include <cstdio>
#include <iostream>

#include "config/config.h"
#include "metrics/metrics.h"
#include "protocol/pop3_command.h"
#include "proxy/admin_server.h"
#include "proxy/log.h"
#include "proxy/server.h"
#include "proxy/tls_context.h"
#include "proxy/uv_handle.h"
#include "proxy/version.h"

namespace {

using namespace popbridge;

bool needs_server_tls(const config::Config& config) {
  for (const config::Listener& listener : config.listeners) {
    if (listener.tls != config::TlsMode::kNone) {
      return true;
    }
  }
  return false;
}

config::LoadResult load(const std::string& path) {
  config::LoadResult result = config::load_config_file(path);
  for (const config::Diagnostic& warning : result.warnings) {
    std::cerr << "warning: " << warning.to_string(path) << "\n";
  }
  for (const config::Diagnostic& error : result.errors) {
    std::cerr << "error: " << error.to_string(path) << "\n";
  }
  return result;
}

int run(const config::Config& config) {
  proxy::log::configure(config.logging);
  proxy::SslCtxPtr server_tls;
  if (needs_server_tls(config)) {
    proxy::TlsContextResult made = proxy::make_server_context(config.tls);
    if (!made.context) {
      std::cerr << "error: tls: " << made.error << "\n";
      return 1;
    }
    server_tls = std::move(made.context);
  }
  proxy::SslCtxPtr upstream_tls;
  if (config.upstream.tls != config::TlsMode::kNone) {
    proxy::TlsContextResult made = proxy::make_client_context(config.upstream);
    if (!made.context) {
      std::cerr << "error: upstream: " << made.error << "\n";
      return 1;
    }
    upstream_tls = std::move(made.context);
  }

  // Each session holds two sockets: lift the soft descriptor limit to the hard one so
  // max_connections, not a distro default of 1024, is what limits the gateway.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  // A peer that resets the connection must give EPIPE on write, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  uv_loop_t* loop = uv_default_loop();
  prometheus::Registry registry;
  std::vector<std::string> listener_names;
  for (const config::Listener& listener : config.listeners) {
    listener_names.push_back(listener.name);
  }
  std::vector<std::string_view> verbs;
  for (std::size_t verb = 0; verb < protocol::kPop3VerbCount; ++verb) {
    verbs.push_back(protocol::verb_name(static_cast<protocol::Pop3Verb>(verb)));
  }
  metrics::Metrics metrics(registry, listener_names, verbs, proxy::kVersion,
                           OpenSSL_version(OPENSSL_VERSION));
  if (server_tls) {
    if (auto expiry = proxy::certificate_expiry(server_tls.get())) {
      metrics.certificate_expiry.Add({{"certificate", config.tls.certificate}})
          .Set(static_cast<double>(*expiry));
    }
  }
  int exit_code = 0;
  {
    proxy::Server server(loop, config, std::move(server_tls), std::move(upstream_tls), metrics);
    proxy::AdminServer admin(loop, {[&] {
                                      metrics.ready.Set(server.ready() ? 1 : 0);
                                      return metrics::expose(registry);
                                    },
                                    [&] { return server.ready(); }});
    proxy::UvHandle<uv_signal_t> terminate([loop](uv_signal_t* h) { return uv_signal_init(loop, h); });
    proxy::UvHandle<uv_signal_t> interrupt([loop](uv_signal_t* h) { return uv_signal_init(loop, h); });
    // Everything that keeps the loop alive once the sessions are gone.
    auto shut_down = [&] {
      server.stop();
      admin.stop();
      terminate.close();
      interrupt.close();
    };
    std::string error;
    if (!server.start(error) ||
        (config.metrics.address && !admin.start(*config.metrics.address, error))) {
      std::cerr << "error: " << error << "\n";
      shut_down();
      exit_code = 1;
    } else {
      proxy::log::info("started", {{"version", proxy::kVersion},
                                   {"tls_library", OpenSSL_version(OPENSSL_VERSION)}});
      struct SignalContext {
        proxy::Server* server;
        std::function<void()> shut_down;
        config::Duration drain_timeout;
        bool draining = false;
      } signals{&server, shut_down, config.limits.drain_timeout};
      terminate.get()->data = &signals;
      interrupt.get()->data = &signals;
      auto on_signal = [](uv_signal_t* handle, int signal_number) noexcept {
        auto* context = static_cast<SignalContext*>(handle->data);
        if (context == nullptr) {
          return;
        }
        if (context->draining) {
          // A second signal: stop waiting for sessions.
          proxy::log::warn("stopping_now", {{"signal", signal_number}});
          context->shut_down();
          return;
        }
        context->draining = true;
        proxy::log::info("stopping", {{"signal", signal_number}});
        context->server->drain(context->drain_timeout, [context] {
          proxy::log::info("drained");
          context->shut_down();
        });
      };
      uv_signal_start(terminate.get(), on_signal, SIGTERM);
      uv_signal_start(interrupt.get(), on_signal, SIGINT);
      uv_run(loop, UV_RUN_DEFAULT);
    }
    shut_down();
    uv_run(loop, UV_RUN_DEFAULT);  // close callbacks and graceful closes
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"popbridge: serve POP3 clients from an IMAP mailbox"};
  std::string config_path;
  bool check_only = false;
  bool version = false;
  app.add_option("-c,--config", config_path, "configuration file (YAML)");
  app.add_flag("--check-config", check_only, "validate the configuration and exit");
  app.add_flag("-V,--version", version, "print the version and exit");
  CLI11_PARSE(app, argc, argv);

  if (version) {
    std::printf("popbridge %s (%s)\n", popbridge::proxy::kVersion,
                OpenSSL_version(OPENSSL_VERSION));
    return 0;
  }
  if (config_path.empty()) {
    std::cerr << "error: --config FILE is required (see --help)\n";
    return 2;
  }
  popbridge::config::LoadResult loaded = load(config_path);
  if (!loaded.config) {
    return 1;
  }
  if (check_only) {
    std::cout << config_path << ": configuration is valid\n";
    return 0;
  }
  return run(*loaded.config);
}
