#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/graveyard.h"
#include "proxy/http_client.h"
#include "proxy/identity.h"
#include "proxy/login_guard.h"
#include "proxy/oauth2_tokens.h"
#include "proxy/tls_context.h"
#include "proxy/uv_handle.h"

namespace popbridge::proxy {

class Pop3Session;

// The configuration and the TLS contexts made from it. A reload makes a new one; each
// session keeps the one it started with, so a reload never changes a session midway.
struct Settings {
  config::Config config;
  SslCtxPtr server_tls;    // null when no listener uses TLS
  SslCtxPtr upstream_tls;  // null when the upstream is plain
  std::shared_ptr<const Identity> identity;
};
using SettingsPtr = std::shared_ptr<const Settings>;

// Loads the certificates and keys the configuration names; null and an error if one fails.
SettingsPtr make_settings(config::Config config, std::string& error);

// What a session works with; it holds its Settings alive.
struct SessionContext {
  SessionContext(uv_loop_t* event_loop, SettingsPtr current, metrics::Metrics& registry,
                 LoginGuard& login_guard, std::shared_ptr<HttpClient> hook,
                 std::shared_ptr<TokenSource> token_source)
      : loop(event_loop),
        settings(std::move(current)),
        auth_http(std::move(hook)),
        tokens(std::move(token_source)),
        config(settings->config),
        server_tls(settings->server_tls.get()),
        upstream_tls(settings->upstream_tls.get()),
        identity(*settings->identity),
        metrics(registry),
        guard(login_guard) {}
  uv_loop_t* loop;
  SettingsPtr settings;
  // Per worker loop, made for these settings; null when not configured. Declared after
  // settings, so they go first: they refer to it.
  std::shared_ptr<HttpClient> auth_http;
  std::shared_ptr<TokenSource> tokens;
  const config::Config& config;
  SSL_CTX* server_tls;
  SSL_CTX* upstream_tls;
  const Identity& identity;
  metrics::Metrics& metrics;
  LoginGuard& guard;  // shared by all workers
};

// Owns the listeners and the sessions of one event loop (one worker).
class Server {
 public:
  // open_sessions counts the sessions of every worker, for limits.max_connections.
  Server(uv_loop_t* loop, SettingsPtr settings, metrics::Metrics& metrics,
         std::atomic<std::size_t>& open_sessions, LoginGuard& guard, TokenCache& tokens);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds every listener (SO_REUSEPORT, so each worker has its own accept queue); on
  // failure names the listener and the reason.
  bool start(std::string& error);
  // New sessions use these settings from now on; open sessions keep theirs. Listener
  // addresses are those bound at start.
  void update_settings(SettingsPtr settings);
  // Stops accepting and closes every session at once (no UPDATE for them: RFC 1939 §6).
  void stop();
  // Stops accepting and lets sessions finish. At the deadline the rest are closed,
  // except those whose QUIT is being carried out upstream: an expunge in flight is
  // completed and answered (bounded by the upstream command timeout). done runs once no
  // session is left.
  void drain(config::Duration deadline, std::function<void()> done);
  bool listening() const { return listening_; }

  // Keeps object alive until a later loop turn. Sessions and upstream clients are
  // retired this way, so nothing is destroyed inside one of its own callbacks.
  void dispose(std::shared_ptr<void> object);
  // Called by a session once it has closed its client connection.
  void session_finished(Pop3Session* session);
  std::size_t active_sessions() const { return sessions_.size(); }

 private:
  struct Listener {
    Listener(Server* owner, config::Listener listener, std::size_t position, uv_loop_t* loop)
        : server(owner),
          settings(std::move(listener)),
          index(position),
          handle([loop](uv_tcp_t* h) { return uv_tcp_init(loop, h); }) {
      handle.get()->data = this;
    }
    Server* server;
    config::Listener settings;  // as bound at start; reloads keep the listener set
    std::size_t index;          // in config.listeners, and in the metrics' listener table
    UvHandle<uv_tcp_t> handle;
  };
  static void on_connection(uv_stream_t* stream, int status) noexcept;
  void accept(Listener& listener);
  void check_drained();
  void release_clients();

  uv_loop_t* loop_;
  SettingsPtr settings_;
  metrics::Metrics& metrics_;
  std::atomic<std::size_t>& open_sessions_;
  LoginGuard& guard_;
  TokenCache& token_cache_;
  std::shared_ptr<HttpClient> auth_http_;
  std::shared_ptr<TokenSource> tokens_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<Pop3Session*, std::unique_ptr<Pop3Session>> sessions_;
  bool listening_ = false;
  bool draining_ = false;
  std::function<void()> drained_;
  Timer drain_deadline_;
  // Declared last, so destroyed first: what it holds still finds the members above.
  Graveyard graveyard_;
};

}  // namespace popbridge::proxy
