// SPDX-License-Identifier: Apache-2.0
#include "proxy/net/resolver.h"

#include <cstring>

namespace popbridge::proxy {

struct Resolver::Request {
  uv_getaddrinfo_t request{};
  Resolver* owner = nullptr;
  std::uint16_t port = 0;
  AllCallback callback;
};

bool parse_ip_literal(const config::Endpoint& endpoint, sockaddr_storage& address) {
  std::memset(&address, 0, sizeof(address));
  if (uv_ip4_addr(endpoint.host.c_str(), endpoint.port, reinterpret_cast<sockaddr_in*>(&address)) ==
      0) {
    return true;
  }
  return uv_ip6_addr(endpoint.host.c_str(), endpoint.port,
                     reinterpret_cast<sockaddr_in6*>(&address)) == 0;
}

Resolver::~Resolver() {
  if (pending_ != nullptr) {
    pending_->owner = nullptr;
    uv_cancel(reinterpret_cast<uv_req_t*>(&pending_->request));
  }
}

void Resolver::resolve(const config::Endpoint& endpoint, Callback callback) {
  resolve_all(endpoint, [callback = std::move(callback)](int status,
                                                         std::vector<sockaddr_storage> addresses) {
    callback(status, addresses.empty() ? sockaddr_storage{} : addresses.front());
  });
}

void Resolver::resolve_all(const config::Endpoint& endpoint, AllCallback callback) {
  sockaddr_storage address{};
  if (parse_ip_literal(endpoint, address)) {
    callback(0, {address});
    return;
  }
  auto request = std::make_unique<Request>();
  request->owner = this;
  request->port = endpoint.port;
  request->callback = std::move(callback);
  request->request.data = request.get();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  auto on_resolved = [](uv_getaddrinfo_t* req, int status, addrinfo* result) noexcept {
    // Owned again here: freed whatever happens below.
    std::unique_ptr<Request> done(static_cast<Request*>(req->data));
    std::vector<sockaddr_storage> addresses;
    for (const addrinfo* entry = status == 0 ? result : nullptr; entry != nullptr;
         entry = entry->ai_next) {
      if (entry->ai_family != AF_INET && entry->ai_family != AF_INET6) {
        continue;
      }
      sockaddr_storage resolved{};
      std::memcpy(&resolved, entry->ai_addr, entry->ai_addrlen);
      if (resolved.ss_family == AF_INET6) {
        reinterpret_cast<sockaddr_in6*>(&resolved)->sin6_port = htons(done->port);
      } else {
        reinterpret_cast<sockaddr_in*>(&resolved)->sin_port = htons(done->port);
      }
      addresses.push_back(resolved);
    }
    if (status == 0 && addresses.empty()) {
      status = UV_EAI_NONAME;
    }
    uv_freeaddrinfo(result);
    if (done->owner != nullptr) {
      done->owner->pending_ = nullptr;
      done->callback(status, std::move(addresses));
    }
  };
  int status =
      uv_getaddrinfo(loop_, &request->request, on_resolved, endpoint.host.c_str(), nullptr, &hints);
  if (status != 0) {
    request->callback(status, {});
    return;
  }
  pending_ = request.release();
}

}  // namespace popbridge::proxy
