// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "protocol/common/secret.h"

namespace popbridge::proxy {

// Checks a password against a crypt(3) hash (yescrypt $y$, bcrypt $2b$, SHA-512 $6$, via
// libxcrypt) on libuv's thread pool: these hashes are slow on purpose and must never run
// on an event loop. An unknown user is checked against a dummy hash, so the answer takes
// as long as for a known one.
class PasswordCheck {
 public:
  using Callback = std::function<void(bool matches)>;

  explicit PasswordCheck(uv_loop_t* loop) : loop_(loop) {}
  // The callback is dropped if this object is destroyed first.
  ~PasswordCheck();
  PasswordCheck(const PasswordCheck&) = delete;
  PasswordCheck& operator=(const PasswordCheck&) = delete;

  // hash empty: unknown user: always false, after checking against stand_in (another
  // user's hash, so the work and the time are those of a real check).
  void start(std::string hash, std::string stand_in, const protocol::Secret& password,
             Callback done);

 private:
  struct Job;
  uv_loop_t* loop_;
  Job* pending_ = nullptr;
};

}  // namespace popbridge::proxy
