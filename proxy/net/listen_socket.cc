// SPDX-License-Identifier: Apache-2.0
#include "proxy/net/listen_socket.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "proxy/net/resolver.h"

namespace popbridge::proxy {

int bind_reuseport(uv_tcp_t* handle, const config::Endpoint& address, std::string& error) {
  sockaddr_storage socket_address{};
  if (!parse_ip_literal(address, socket_address)) {
    error = "address must be an IP literal, got '" + address.host + "'";
    return UV_EINVAL;
  }
  const int fd = socket(socket_address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -errno;
  }
  const int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
      bind(fd, reinterpret_cast<const sockaddr*>(&socket_address),
           socket_address.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in)) !=
          0) {
    const int status = -errno;
    close(fd);
    return status;
  }
  const int status = uv_tcp_open(handle, fd);
  if (status != 0) {
    close(fd);
  }
  return status;
}

std::optional<ListenLock> ListenLock::acquire(const config::Endpoint& address, std::string& error) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("cannot create the listener lock: ") + std::strerror(errno);
    return std::nullopt;
  }
  sockaddr_un name{};
  name.sun_family = AF_UNIX;
  // Abstract namespace: a leading NUL, then the name; it vanishes with the process.
  const std::string text = "popbridge-listen " + address.to_string();
  const std::size_t length = std::min(text.size(), sizeof(name.sun_path) - 1);
  std::memcpy(name.sun_path + 1, text.data(), length);
  const auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + length);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&name), size) != 0) {
    const int code = errno;
    close(fd);
    error = code == EADDRINUSE
                ? "address in use by another popbridge process"
                : std::string("cannot take the listener lock: ") + std::strerror(code);
    return std::nullopt;
  }
  return ListenLock(fd);
}

ListenLock::~ListenLock() {
  if (fd_ >= 0) {
    close(fd_);
  }
}

}  // namespace popbridge::proxy
