#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/graveyard.h"
#include "proxy/tls_context.h"
#include "proxy/upstream_probe.h"
#include "proxy/uv_handle.h"

namespace popbridge::proxy {

class Pop3Session;

// What every session of a loop shares; owned by the Server, outlives its sessions.
struct SessionContext {
  uv_loop_t* loop;
  const config::Config& config;
  SSL_CTX* server_tls;    // null when no listener uses TLS
  SSL_CTX* upstream_tls;  // null when the upstream is plain
  metrics::Metrics& metrics;
};

// Owns the listeners and the sessions of one event loop.
class Server {
 public:
  Server(uv_loop_t* loop, const config::Config& config, SslCtxPtr server_tls,
         SslCtxPtr upstream_tls, metrics::Metrics& metrics);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds every listener and starts probing the upstream; on failure names the listener
  // and the reason.
  bool start(std::string& error);
  // Stops accepting and closes every session at once (no UPDATE for them: RFC 1939 §6).
  void stop();
  // Stops accepting and lets sessions finish. At the deadline the rest are closed,
  // except those whose QUIT is being carried out upstream: an expunge in flight is
  // completed and answered (bounded by the upstream command timeout). done runs once no
  // session is left.
  void drain(config::Duration deadline, std::function<void()> done);
  // What /readyz reports: listening, not draining, and the upstream answers.
  bool ready() const;

  // Keeps object alive until a later loop turn. Sessions and upstream clients are
  // retired this way, so nothing is destroyed inside one of its own callbacks.
  void dispose(std::shared_ptr<void> object);
  // Called by a session once it has closed its client connection.
  void session_finished(Pop3Session* session);
  std::size_t active_sessions() const { return sessions_.size(); }

 private:
  struct Listener {
    Listener(Server* owner, const config::Listener* listener, std::size_t position,
             uv_loop_t* loop)
        : server(owner),
          settings(listener),
          index(position),
          handle([loop](uv_tcp_t* h) { return uv_tcp_init(loop, h); }) {
      handle.get()->data = this;
    }
    Server* server;
    const config::Listener* settings;
    std::size_t index;  // in config.listeners, and in the metrics' listener table
    UvHandle<uv_tcp_t> handle;
  };
  static void on_connection(uv_stream_t* stream, int status) noexcept;
  void accept(Listener& listener);
  void check_drained();

  SslCtxPtr server_tls_;
  SslCtxPtr upstream_tls_;
  SessionContext context_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<Pop3Session*, std::unique_ptr<Pop3Session>> sessions_;
  std::uint64_t next_session_id_ = 1;
  std::unique_ptr<UpstreamProbe> probe_;
  bool listening_ = false;
  bool draining_ = false;
  std::function<void()> drained_;
  Timer drain_deadline_;
  // Declared last, so destroyed first: what it holds still finds the members above.
  Graveyard graveyard_;
};

}  // namespace popbridge::proxy
