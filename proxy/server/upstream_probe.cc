// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/upstream_probe.h"

#include "proxy/base/log.h"

namespace popbridge::proxy {

UpstreamProbe::UpstreamProbe(uv_loop_t* loop, const config::Upstream& settings,
                             SSL_CTX* tls_context, std::uint64_t interval_ms,
                             std::uint32_t failures, bool initially_reachable)
    : loop_(loop),
      settings_(settings),
      tls_context_(tls_context),
      interval_ms_(interval_ms),
      failures_needed_(failures),
      timer_(loop),
      reachable_(initially_reachable) {}

void UpstreamProbe::start() { probe(); }

void UpstreamProbe::probe() {
  ImapClient::Observer& observer = *this;
  client_ = std::make_shared<ImapClient>(loop_, settings_, tls_context_, observer);
  client_->connect([this](const ImapResult& result) {
    failures_ = result.ok() ? 0 : failures_ + 1;
    const bool reachable = result.ok() || (reachable_ && failures_ < failures_needed_);
    if (!result.ok() && reachable) {
      log::warn("upstream_probe_failed", {{"address", settings_.address.to_string()},
                                          {"reason", result.text},
                                          {"failures", failures_},
                                          {"unready_after", failures_needed_}});
    }
    if (reachable != reachable_ || first_) {
      first_ = false;
      if (reachable) {
        log::info("upstream_reachable", {{"address", settings_.address.to_string()}});
      } else {
        log::warn("upstream_unreachable", {{"address", settings_.address.to_string()},
                                           {"reason", result.text},
                                           {"failures", failures_}});
      }
    }
    reachable_ = reachable;
    client_->logout();
    DeferredDelete::of(loop_).retire(std::move(client_));
    client_.reset();
    timer_.start(interval_ms_, [this] { probe(); });
  });
}

}  // namespace popbridge::proxy
