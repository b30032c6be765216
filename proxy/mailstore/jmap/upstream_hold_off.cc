// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/jmap/upstream_hold_off.h"

namespace popbridge::proxy {

UpstreamHoldOff& UpstreamHoldOff::process_wide() {
  static UpstreamHoldOff instance;
  return instance;
}

void UpstreamHoldOff::hold(const std::string& upstream, Clock::time_point until) {
  const std::lock_guard lock(mutex_);
  auto [entry, added] = until_.try_emplace(upstream, until);
  if (!added && entry->second < until) {
    entry->second = until;
  }
}

std::optional<std::chrono::seconds> UpstreamHoldOff::remaining(const std::string& upstream,
                                                               Clock::time_point now) {
  const std::lock_guard lock(mutex_);
  const auto entry = until_.find(upstream);
  if (entry == until_.end()) {
    return std::nullopt;
  }
  if (entry->second <= now) {
    until_.erase(entry);  // so the table holds only upstreams that are held back
    return std::nullopt;
  }
  return std::chrono::ceil<std::chrono::seconds>(entry->second - now);
}

void UpstreamHoldOff::clear() {
  const std::lock_guard lock(mutex_);
  until_.clear();
}

}  // namespace popbridge::proxy
