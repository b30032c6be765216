// SPDX-License-Identifier: Apache-2.0
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
#include "proxy/base/deferred_delete.h"
#include "proxy/base/uv_handle.h"
#include "proxy/identity/identity.h"
#include "proxy/identity/login_guard.h"
#include "proxy/identity/oauth2_tokens.h"
#include "proxy/net/http_client.h"
#include "proxy/net/tls_context.h"
#include "proxy/pop3/session_context.h"

namespace popbridge::proxy {

class Pop3Session;

// Loads the certificates and keys the configuration names; null and an error if one fails.
SettingsPtr make_settings(config::Config config, std::string& error);

// What start-up would refuse, or an operator should hear, beyond make_settings: listener
// addresses that are not IP literals (errors); a certificate that has expired or expires
// within 14 days (warnings). --check-config runs it, like `nginx -t`, and so do start-up
// and reload (warnings logged).
struct SettingsCheck {
  std::vector<std::string> errors;
  std::vector<std::string> warnings;
};
SettingsCheck check_settings(const Settings& settings);

// Owns the listeners and the sessions of one event loop (one worker).
class Server final : public SessionHost {
 public:
  // open_sessions counts the sessions of every worker, for limits.max_connections.
  // worker: this loop's number, for logs.
  Server(uv_loop_t* loop, std::size_t worker, SettingsPtr settings, metrics::Metrics& metrics,
         std::atomic<std::size_t>& open_sessions, LoginGuard& guard, MailboxHistory& mailboxes,
         TokenCache& tokens);
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
  void dispose(std::shared_ptr<void> object) override;
  // Called by a session once it has closed its client connection.
  void session_finished(Pop3Session* session) override;
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
    // Accepted sockets get nodelay and keep-alive from the listening socket.
    bool tcp_options_inherited = false;
  };
  static void on_connection(uv_stream_t* stream, int status) noexcept;
  void accept(Listener& listener);
  void check_drained();
  void release_clients();

  uv_loop_t* loop_;
  std::size_t worker_;
  SettingsPtr settings_;
  metrics::Metrics& metrics_;
  std::atomic<std::size_t>& open_sessions_;
  LoginGuard& guard_;
  MailboxHistory& mailboxes_;
  TokenCache& token_cache_;
  std::shared_ptr<HttpClient> auth_http_;
  std::shared_ptr<TokenSource> tokens_;
  std::shared_ptr<LoginPool> logins_;  // for these settings; a reload starts a new one
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<Pop3Session*, std::unique_ptr<Pop3Session>> sessions_;
  bool listening_ = false;
  bool draining_ = false;
  std::function<void()> drained_;
  Timer drain_deadline_;
  // Declared last, so destroyed first: what it holds still finds the members above.
};

}  // namespace popbridge::proxy
