// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/server.h"

#include <ctime>

#include "protocol/pop3/pop3_reply.h"
#include "proxy/base/log.h"
#include "proxy/net/connection.h"
#include "proxy/net/listen_socket.h"
#include "proxy/net/resolver.h"
#include "proxy/net/tcp_options.h"
#include "proxy/pop3/pop3_session.h"

namespace popbridge::proxy {
namespace {

bool needs_server_tls(const config::Config& config) {
  for (const config::Listener& listener : config.listeners) {
    if (listener.tls != config::TlsMode::kNone) {
      return true;
    }
  }
  return false;
}

}  // namespace

SettingsPtr make_settings(config::Config config, std::string& error) {
  auto settings = std::make_shared<Settings>();
  if (needs_server_tls(config)) {
    TlsContextResult made = make_server_context(config.tls);
    if (!made.context) {
      error = "tls: " + made.error;
      return nullptr;
    }
    settings->server_tls = std::move(made.context);
  }
  // A route from the auth hook may need TLS even when the configured upstream does not.
  if (config.upstream.tls != config::TlsMode::kNone ||
      config.auth.mode == config::AuthMode::kHttp) {
    TlsContextResult made = make_client_context(config.upstream);
    if (!made.context) {
      error = "upstream: " + made.error;
      return nullptr;
    }
    settings->upstream_tls = std::move(made.context);
  }
  settings->egress_proxy = proxy_from_environment(settings->egress_proxy_problems);
  settings->identity = load_identity(config, error);
  if (!settings->identity) {
    return nullptr;
  }
  settings->config = std::move(config);
  return settings;
}

SettingsCheck check_settings(const Settings& settings) {
  SettingsCheck check;
  for (const std::string& problem : settings.egress_proxy_problems) {
    check.warnings.push_back("egress proxy ignored: " + problem);
  }
  for (const config::Listener& listener : settings.config.listeners) {
    sockaddr_storage address{};
    if (!parse_ip_literal(listener.address, address)) {
      check.errors.push_back("listener " + listener.name + ": address '" +
                             listener.address.to_string() +
                             "' must be an IP address (0.0.0.0, [::] or one of this host's)");
    }
  }
  if (settings.server_tls) {
    if (std::optional<std::int64_t> expiry = certificate_expiry(settings.server_tls.get())) {
      const std::int64_t left = *expiry - static_cast<std::int64_t>(std::time(nullptr));
      const std::string& path = settings.config.tls.certificate;
      if (left <= 0) {
        check.warnings.push_back("tls.certificate: " + path + " has expired");
      } else if (left < 14 * 24 * 3600) {
        check.warnings.push_back("tls.certificate: " + path + " expires in " +
                                 std::to_string(left / 3600) + " hours");
      }
    }
  }
  return check;
}

Server::Server(uv_loop_t* loop, std::size_t worker, SettingsPtr settings, metrics::Metrics& metrics,
               std::atomic<std::size_t>& open_sessions, LoginGuard& guard,
               MailboxHistory& mailboxes, TokenCache& token_cache)
    : loop_(loop),
      worker_(worker),
      metrics_(metrics),
      open_sessions_(open_sessions),
      guard_(guard),
      mailboxes_(mailboxes),
      token_cache_(token_cache),
      drain_deadline_(loop) {
  update_settings(std::move(settings));
}

void Server::update_settings(SettingsPtr settings) {
  logins_.reset();  // its connections refer to the old settings: they log out first
  settings_ = std::move(settings);
  // Open sessions keep the clients made for their settings through their context.
  const config::Config& config = settings_->config;
  auth_http_.reset();
  if (config.auth.mode == config::AuthMode::kHttp) {
    HttpClientOptions options;
    options.ca_file = config.auth.http.ca_file;
    options.verify_certificate = config.auth.http.verify_certificate;
    options.proxy = settings_->egress_proxy;
    auth_http_ = std::make_shared<HttpClient>(loop_, options);
  }
  logins_ = make_login_pool(loop_, config.upstream, metrics_, settings_->egress_proxy);
  tokens_.reset();
  if (config.upstream.login.mode == config::UpstreamLoginMode::kOAuth2) {
    tokens_ =
        std::make_shared<TokenSource>(loop_, config.upstream.login.oauth2, *settings_->identity,
                                      token_cache_, settings_->egress_proxy, &metrics_);
  }
}

Server::~Server() { stop(); }

bool Server::start(std::string& error) {
  for (std::size_t index = 0; index < settings_->config.listeners.size(); ++index) {
    const config::Listener& settings = settings_->config.listeners[index];
    auto listener = std::make_unique<Listener>(this, settings, index, loop_);
    int status = bind_reuseport(listener->handle.get(), settings.address, error);
    if (status != 0 && !error.empty()) {
      error = "listener '" + settings.name + "': " + error;
      return false;
    }
    uv_os_fd_t fd = -1;
    if (status == 0 && kAcceptedSocketsInheritTcpOptions &&
        uv_fileno(reinterpret_cast<uv_handle_t*>(listener->handle.get()), &fd) == 0) {
      listener->tcp_options_inherited = set_tcp_options(fd, Connection::KeepAlive{});
    }
    if (status == 0) {
      status = uv_listen(reinterpret_cast<uv_stream_t*>(listener->handle.get()), 511,
                         &Server::on_connection);
    }
    if (status != 0) {
      error = "listener '" + settings.name + "' on " + settings.address.to_string() + ": " +
              uv_strerror(status);
      return false;
    }
    log::info("listening", {{"worker", worker_},
                            {"listener", settings.name},
                            {"address", settings.address.to_string()},
                            {"tls", settings.tls == config::TlsMode::kImplicit   ? "implicit"
                                    : settings.tls == config::TlsMode::kStartTls ? "starttls"
                                                                                 : "none"}});
    listeners_.push_back(std::move(listener));
  }
  listening_ = true;
  return true;
}

void Server::drain(config::Duration deadline, std::function<void()> done) {
  draining_ = true;
  listening_ = false;
  listeners_.clear();
  drained_ = std::move(done);
  log::info("draining", {{"sessions", sessions_.size()},
                         {"deadline_ms", static_cast<long long>(deadline.count())}});
  drain_deadline_.start(static_cast<std::uint64_t>(deadline.count()), [this] {
    std::vector<Pop3Session*> open;
    for (auto& [session, owner] : sessions_) {
      if (!session->updating()) {
        open.push_back(session);
      }
    }
    log::warn("drain_deadline",
              {{"closed", open.size()}, {"updating", sessions_.size() - open.size()}});
    for (Pop3Session* session : open) {
      session->abort(metrics::SessionEnd::kShutdown);
    }
  });
  check_drained();
}

void Server::check_drained() {
  if (!draining_ || !sessions_.empty() || !drained_) {
    return;
  }
  drain_deadline_.stop();
  release_clients();
  auto done = std::move(drained_);
  drained_ = nullptr;
  done();
}

void Server::release_clients() {
  // Kept-alive HTTP connections and their timers would keep the loop running.
  auth_http_.reset();
  tokens_.reset();
  logins_.reset();  // parked connections log out
}

void Server::stop() {
  listening_ = false;
  listeners_.clear();
  drain_deadline_.stop();
  release_clients();
  // Sessions remove themselves from the map as they finish.
  std::vector<Pop3Session*> open;
  open.reserve(sessions_.size());
  for (auto& [session, owner] : sessions_) {
    open.push_back(session);
  }
  for (Pop3Session* session : open) {
    session->abort(metrics::SessionEnd::kShutdown);
  }
}

void Server::on_connection(uv_stream_t* stream, int status) noexcept {
  auto* listener = static_cast<Listener*>(stream->data);
  if (listener == nullptr) {
    return;
  }
  if (status != 0) {
    log::warn("accept_failed", {{"reason", uv_strerror(status)}});
    return;
  }
  listener->server->accept(*listener);
}

void Server::accept(Listener& listener) {
  ConnectionPtr connection = Connection::create(loop_, nullptr);
  if (uv_accept(reinterpret_cast<uv_stream_t*>(listener.handle.get()), connection->stream()) != 0) {
    return;
  }
  connection->configure_socket(listener.tcp_options_inherited ? Connection::TcpOptions::kInherited
                                                              : Connection::TcpOptions::kSet);
  // Counted before the check, so workers accepting at the same time cannot both take
  // the last slot.
  if (open_sessions_.fetch_add(1) >= settings_->config.limits.max_connections) {
    --open_sessions_;
    metrics_.rejected(metrics::Rejection::kLimit).Increment();
    log::warn("connection_refused", {{"listener", listener.settings.name},
                                     {"client", connection->peer_address()},
                                     {"reason", "limit"}});
    // Said in the clear even on an implicit-TLS port: a client that cannot read it just
    // sees the connection close, which is the same outcome.
    if (listener.settings.tls != config::TlsMode::kImplicit) {
      connection->write(protocol::err_reply(protocol::RespCode::kSysTemp, "too many connections"));
    }
    connection->close_after_flush();
    return;
  }
  // One sequence for the whole process: ids stay unique across worker loops.
  static std::atomic<std::uint64_t> next_session_id{1};
  const std::uint64_t id = next_session_id++;
  auto session = std::make_unique<Pop3Session>(
      *this,
      SessionContext(loop_, settings_, metrics_, guard_, mailboxes_, auth_http_, tokens_, logins_),
      settings_->config.listeners[listener.index], listener.index, std::move(connection), id);
  Pop3Session* raw = session.get();
  sessions_.emplace(raw, std::move(session));
  raw->start();
}

void Server::session_finished(Pop3Session* session) {
  auto found = sessions_.find(session);
  if (found == sessions_.end()) {
    return;
  }
  dispose(std::shared_ptr<void>(std::move(found->second)));
  sessions_.erase(found);
  --open_sessions_;
  check_drained();
}

void Server::dispose(std::shared_ptr<void> object) {
  DeferredDelete::of(loop_).retire(std::move(object));
}

}  // namespace popbridge::proxy
