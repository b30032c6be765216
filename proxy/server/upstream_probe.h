// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <memory>

#include "config/config.h"
#include "proxy/base/deferred_delete.h"
#include "proxy/base/uv_handle.h"
#include "proxy/mailstore/imap/imap_client.h"
#include "proxy/net/http_client.h"

namespace popbridge::proxy {

// Checks now and then that the upstream answers: for IMAP connect, TLS as configured,
// greeting and capabilities, then LOGOUT; for JMAP a GET of the session resource, where
// any answer below 500 (a 401 or a redirect without credentials included) means up. No
// login either way. /readyz reports not ready once `failures`
// probes in a row failed (one success makes it ready again), so a load balancer sends
// clients to a gateway that can serve them, and a single blip does not take every
// replica out of service at once.
class UpstreamProbe final : ImapClient::Observer {
 public:
  // initially_reachable: what a replaced probe last saw, so a reload does not turn the
  // gateway unready until the first new probe answers. A JMAP probe goes through
  // egress_proxy, as the sessions' requests do.
  UpstreamProbe(uv_loop_t* loop, const config::Upstream& settings, SSL_CTX* tls_context,
                std::uint64_t interval_ms, std::uint32_t failures, bool initially_reachable,
                HttpProxy egress_proxy);
  UpstreamProbe(const UpstreamProbe&) = delete;
  UpstreamProbe& operator=(const UpstreamProbe&) = delete;

  void start();
  bool reachable() const { return reachable_; }

 private:
  void on_upstream_lost(const ImapResult&) override {}
  void probe();
  void probe_http();
  // One probe's outcome: logs a change and schedules the next.
  void record(bool ok, const std::string& why);

  uv_loop_t* loop_;
  const config::Upstream& settings_;
  SSL_CTX* tls_context_;
  std::uint64_t interval_ms_;
  std::uint32_t failures_needed_;
  std::uint32_t failures_ = 0;  // consecutive
  Timer timer_;
  std::shared_ptr<ImapClient> client_;
  std::unique_ptr<HttpClient> http_;  // protocol: jmap
  HttpClient::RequestHandle request_;
  bool reachable_ = false;
  HttpProxy egress_proxy_;
  bool first_ = true;  // the first result is always logged
};

}  // namespace popbridge::proxy
