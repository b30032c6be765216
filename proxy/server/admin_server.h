// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "config/config.h"
#include "proxy/base/deferred_delete.h"
#include "proxy/base/uv_handle.h"

namespace popbridge::proxy {

// The admin HTTP endpoint on the event loop: GET /metrics (Prometheus text format),
// /healthz (the loop is alive: answering at all proves it), /readyz (200 only while the
// gateway takes sessions). Unknown paths get 404, other methods 405, malformed requests
// 400. Each request is small and answered at once, so it never blocks the loop.
class AdminServer {
 public:
  struct Hooks {
    std::function<std::string()> metrics_text;
    std::function<bool()> ready;
  };

  AdminServer(uv_loop_t* loop, Hooks hooks);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  bool start(const config::Endpoint& address, std::string& error);
  void stop();

 private:
  class Exchange;
  static void on_connection(uv_stream_t* stream, int status) noexcept;
  void finished(Exchange* exchange);

  uv_loop_t* loop_;
  Hooks hooks_;
  std::unique_ptr<UvHandle<uv_tcp_t>> listener_;
  std::unordered_map<Exchange*, std::shared_ptr<Exchange>> exchanges_;
};

}  // namespace popbridge::proxy
