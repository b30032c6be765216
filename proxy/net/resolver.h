#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "config/config.h"

namespace popbridge::proxy {

// Resolves an endpoint on libuv's thread pool (getaddrinfo blocks). IP literals resolve
// at once without the pool. Destroying the Resolver cancels the callback; the request
// memory lives until libuv has called back.
class Resolver {
 public:
  // status 0 and an address, or a libuv error code.
  using Callback = std::function<void(int status, const sockaddr_storage& address)>;

  explicit Resolver(uv_loop_t* loop) : loop_(loop) {}
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  void resolve(const config::Endpoint& endpoint, Callback callback);

 private:
  struct Request;
  uv_loop_t* loop_;
  Request* pending_ = nullptr;
};

// Fills address for an IP literal; false for a host name.
bool parse_ip_literal(const config::Endpoint& endpoint, sockaddr_storage& address);

}  // namespace popbridge::proxy
