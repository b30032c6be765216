// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "config/config.h"

namespace popbridge::proxy {

// Abuse protection shared by every worker of the process: failed logins are answered
// after a delay that doubles with each recent failure from the same client address or
// for the same user name (whichever has more), up to a cap; failures are forgotten after
// auth.failure_memory. Also the per-user session lock behind auth.exclusive_sessions.
// Thread-safe; every call is short.
class LoginGuard {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LoginGuard(std::function<Clock::time_point()> now = [] { return Clock::now(); })
      : now_(std::move(now)) {}
  LoginGuard(const LoginGuard&) = delete;
  LoginGuard& operator=(const LoginGuard&) = delete;

  // Records a failure and returns how long to wait before answering it.
  config::Duration record_failure(const config::Auth& auth, const std::string& address,
                                  const std::string& user);
  // A success clears the user's record (not the address's: one valid account must not
  // unlock guessing at others from the same place).
  void record_success(const std::string& user);
  // Recent failures for the address or the user, whichever is larger.
  unsigned recent_failures(const config::Auth& auth, const std::string& address,
                           const std::string& user);

  // exclusive_sessions: false if the user already has a session.
  bool lock_user(const std::string& user);
  void unlock_user(const std::string& user);
  // pop3.login_delay: admits (and records) a login when the user's last admitted one is
  // at least `delay` ago; otherwise how long is left.
  std::optional<config::Duration> admit_login(const std::string& user, config::Duration delay);

 private:
  struct Record {
    unsigned failures = 0;
    Clock::time_point last;
  };
  unsigned current(std::unordered_map<std::string, Record>& records, const std::string& key,
                   const config::Auth& auth, Clock::time_point now);
  void expire(const config::Auth& auth, Clock::time_point now);

  std::function<Clock::time_point()> now_;
  std::mutex mutex_;
  std::unordered_map<std::string, Record> by_address_;
  std::unordered_map<std::string, Record> by_user_;
  std::unordered_set<std::string> locked_users_;
  std::unordered_map<std::string, Clock::time_point> last_login_;
  Clock::time_point last_login_sweep_{};
  Clock::time_point last_sweep_{};
};

}  // namespace popbridge::proxy
