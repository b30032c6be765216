// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <optional>
#include <string>
#include <utility>

#include "config/config.h"

namespace popbridge::proxy {

// Binds handle to address with SO_REUSEPORT, so every worker loop can bind the same
// address and the kernel spreads new connections across their accept queues (libuv 1.44
// cannot set the option itself). Returns 0 or a libuv error code; a non-IP host sets
// error and returns UV_EINVAL.
int bind_reuseport(uv_tcp_t* handle, const config::Endpoint& address, std::string& error);

// SO_REUSEPORT lets any process of the same user join a listening address, so a second
// popbridge started by mistake would silently take a share of the connections. Each
// process therefore holds a lock per listening address first: an abstract Unix socket
// named after it (per network namespace, like the port itself; no file to clean up).
// Only the workers of the process holding it bind the address.
class ListenLock {
 public:
  // Empty and error set ("address in use by another popbridge process") when taken.
  static std::optional<ListenLock> acquire(const config::Endpoint& address, std::string& error);
  ListenLock(ListenLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  ListenLock& operator=(ListenLock&&) = delete;
  ListenLock(const ListenLock&) = delete;
  ListenLock& operator=(const ListenLock&) = delete;
  ~ListenLock();

 private:
  explicit ListenLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace popbridge::proxy
