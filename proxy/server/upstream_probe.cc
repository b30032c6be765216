// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/upstream_probe.h"

#include <utility>

#include "proxy/base/log.h"

namespace popbridge::proxy {

UpstreamProbe::UpstreamProbe(uv_loop_t* loop, const config::Upstream& settings,
                             SSL_CTX* tls_context, std::uint64_t interval_ms,
                             std::uint32_t failures, bool initially_reachable,
                             HttpProxy egress_proxy)
    : loop_(loop),
      settings_(settings),
      tls_context_(tls_context),
      interval_ms_(interval_ms),
      failures_needed_(failures),
      timer_(loop),
      reachable_(initially_reachable),
      egress_proxy_(std::move(egress_proxy)) {}

void UpstreamProbe::start() { probe(); }

void UpstreamProbe::probe() {
  if (settings_.protocol == config::UpstreamProtocol::kJmap) {
    probe_http();
    return;
  }
  ImapClient::Observer& observer = *this;
  client_ = std::make_shared<ImapClient>(loop_, settings_, tls_context_, observer);
  client_->connect([this](const ImapResult& result) {
    client_->logout();
    DeferredDelete::of(loop_).retire(std::move(client_));
    client_.reset();
    record(result.ok(), result.text);
  });
}

void UpstreamProbe::probe_http() {
  if (http_ == nullptr) {
    HttpClientOptions options;
    options.tls_context = tls_context_;
    options.max_idle_connections = 0;  // a probe of the path, not of a kept connection
    options.proxy = egress_proxy_;
    http_ = std::make_unique<HttpClient>(loop_, options);
  }
  HttpRequest request;
  request.url = settings_.url;
  request.headers = {{"Accept", "application/json"}};
  request.timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(settings_.connect_timeout);
  request_ = http_->request(std::move(request), [this](HttpResult result) {
    if (!result.ok()) {
      record(false, std::string(to_string(result.error)) + ": " + result.error_text);
      return;
    }
    record(result.status < 500, "HTTP " + std::to_string(result.status));
  });
}

void UpstreamProbe::record(bool ok, const std::string& why) {
  failures_ = ok ? 0 : failures_ + 1;
  const bool reachable = ok || (reachable_ && failures_ < failures_needed_);
  if (!ok && reachable) {
    log::warn("upstream_probe_failed", {{"address", settings_.address.to_string()},
                                        {"reason", why},
                                        {"failures", failures_},
                                        {"unready_after", failures_needed_}});
  }
  if (reachable != reachable_ || first_) {
    first_ = false;
    if (reachable) {
      log::info("upstream_reachable", {{"address", settings_.address.to_string()}});
    } else {
      log::warn(
          "upstream_unreachable",
          {{"address", settings_.address.to_string()}, {"reason", why}, {"failures", failures_}});
    }
  }
  reachable_ = reachable;
  timer_.start(interval_ms_, [this] { probe(); });
}

}  // namespace popbridge::proxy
