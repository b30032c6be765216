// SPDX-License-Identifier: Apache-2.0
#include "proxy/identity/login_guard.h"

#include <algorithm>

namespace popbridge::proxy {

unsigned LoginGuard::current(std::unordered_map<std::string, Record>& records,
                             const std::string& key, const config::Auth& auth,
                             Clock::time_point now) {
  auto found = records.find(key);
  if (found == records.end()) {
    return 0;
  }
  if (now - found->second.last > auth.failure_memory) {
    records.erase(found);
    return 0;
  }
  return found->second.failures;
}

void LoginGuard::expire(const config::Auth& auth, Clock::time_point now) {
  // A sweep now and then keeps the maps from growing with one-off addresses.
  if (now - last_sweep_ < auth.failure_memory) {
    return;
  }
  last_sweep_ = now;
  for (auto* records : {&by_address_, &by_user_}) {
    std::erase_if(*records,
                  [&](const auto& entry) { return now - entry.second.last > auth.failure_memory; });
  }
}

config::Duration LoginGuard::record_failure(const config::Auth& auth, const std::string& address,
                                            const std::string& user) {
  std::lock_guard lock(mutex_);
  const Clock::time_point now = now_();
  expire(auth, now);
  unsigned failures = 0;
  for (auto [records, key] : {std::pair{&by_address_, &address}, std::pair{&by_user_, &user}}) {
    if (key->empty()) {
      continue;
    }
    Record& record = (*records)[*key];
    if (now - record.last > auth.failure_memory) {
      record.failures = 0;
    }
    ++record.failures;
    record.last = now;
    failures = std::max(failures, record.failures);
  }
  // failure_delay, then twice that, four times, ... up to the cap.
  config::Duration delay = auth.failure_delay;
  for (unsigned i = 1; i < failures && delay < auth.max_failure_delay; ++i) {
    delay *= 2;
  }
  return std::min(delay, std::max(auth.max_failure_delay, auth.failure_delay));
}

void LoginGuard::record_success(const std::string& user) {
  std::lock_guard lock(mutex_);
  by_user_.erase(user);
}

unsigned LoginGuard::recent_failures(const config::Auth& auth, const std::string& address,
                                     const std::string& user) {
  std::lock_guard lock(mutex_);
  const Clock::time_point now = now_();
  return std::max(current(by_address_, address, auth, now), current(by_user_, user, auth, now));
}

bool LoginGuard::lock_user(const std::string& user) {
  std::lock_guard lock(mutex_);
  return locked_users_.insert(user).second;
}

void LoginGuard::unlock_user(const std::string& user) {
  std::lock_guard lock(mutex_);
  locked_users_.erase(user);
}

std::optional<config::Duration> LoginGuard::admit_login(const std::string& user,
                                                        config::Duration delay) {
  const Clock::time_point now = now_();
  std::lock_guard lock(mutex_);
  if (now - last_login_sweep_ >= delay) {
    // Entries older than the delay admit anyway: dropped, so the map holds only the
    // users who logged in within one delay.
    std::erase_if(last_login_, [&](const auto& entry) { return now - entry.second >= delay; });
    last_login_sweep_ = now;
  }
  auto [it, first] = last_login_.try_emplace(user, now);
  if (!first && now - it->second < delay) {
    return std::chrono::duration_cast<config::Duration>(delay - (now - it->second));
  }
  it->second = now;
  return std::nullopt;
}

}  // namespace popbridge::proxy
