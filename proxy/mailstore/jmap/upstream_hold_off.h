// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace popbridge::proxy {

// A server's "not before" (Retry-After on a 429 or 503), remembered per upstream for the
// whole process: every worker's sessions hold their logins back until then instead of
// adding to the load the server asked to shed. POP3 clients hear [SYS/TEMP] meanwhile,
// which they already treat as "poll again later".
class UpstreamHoldOff {
 public:
  using Clock = std::chrono::steady_clock;

  // Shared by the workers, which are threads: Retry-After is the server's word about
  // itself, not about one session.
  static UpstreamHoldOff& process_wide();

  // A later "not before" extends the hold; an earlier one never shortens it.
  void hold(const std::string& upstream, Clock::time_point until);
  // How long logins to upstream are still held back, rounded up; nullopt when they are not.
  std::optional<std::chrono::seconds> remaining(const std::string& upstream, Clock::time_point now);
  void clear();

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, Clock::time_point> until_;
};

}  // namespace popbridge::proxy
