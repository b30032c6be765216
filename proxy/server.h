#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/tls_context.h"
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

  // Binds every listener; on failure names the listener and the reason.
  bool start(std::string& error);
  // Stops accepting and closes every session at once (no UPDATE for them: RFC 1939 §6).
  void stop();

  // Keeps object alive until a later loop turn. Sessions and upstream clients are
  // retired this way, so nothing is destroyed inside one of its own callbacks.
  void dispose(std::shared_ptr<void> object);
  // Called by a session once it has closed its client connection.
  void session_finished(Pop3Session* session);
  std::size_t active_sessions() const { return sessions_.size(); }

 private:
  struct Listener {
    Listener(Server* owner, const config::Listener* listener, uv_loop_t* loop)
        : server(owner),
          settings(listener),
          handle([loop](uv_tcp_t* h) { return uv_tcp_init(loop, h); }) {
      handle.get()->data = this;
    }
    Server* server;
    const config::Listener* settings;
    UvHandle<uv_tcp_t> handle;
  };
  static void on_connection(uv_stream_t* stream, int status) noexcept;
  void accept(Listener& listener);
  void schedule_reaping();

  SslCtxPtr server_tls_;
  SslCtxPtr upstream_tls_;
  SessionContext context_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<Pop3Session*, std::unique_ptr<Pop3Session>> sessions_;
  std::vector<std::shared_ptr<void>> graveyard_;
  Timer reaper_;
  std::uint64_t next_session_id_ = 1;
};

}  // namespace popbridge::proxy
