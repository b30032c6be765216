// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace popbridge::proxy {

// Resolves an endpoint on libuv's thread pool (getaddrinfo blocks). IP literals resolve
// at once without the pool. Destroying the Resolver cancels the callback; the request
// memory lives until libuv has called back.
class Resolver {
 public:
  // status 0 and an address, or a libuv error code.
  using Callback = std::function<void(int status, const sockaddr_storage& address)>;
  // status 0 and every address, in getaddrinfo's order (RFC 6724: IPv6 and IPv4 as the
  // host's preferences say), or a libuv error code and none.
  using AllCallback = std::function<void(int status, std::vector<sockaddr_storage> addresses)>;

  explicit Resolver(uv_loop_t* loop) : loop_(loop) {}
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  void resolve(const config::Endpoint& endpoint, Callback callback);
  // Names with several addresses (imap.gmail.com, outlook.office365.com): a caller can
  // try each, as nginx and curl do.
  void resolve_all(const config::Endpoint& endpoint, AllCallback callback);

 private:
  struct Request;
  uv_loop_t* loop_;
  Request* pending_ = nullptr;
};

// Fills address for an IP literal; false for a host name.
bool parse_ip_literal(const config::Endpoint& endpoint, sockaddr_storage& address);

}  // namespace popbridge::proxy
