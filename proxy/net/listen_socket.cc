#include "proxy/net/listen_socket.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

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

}  // namespace popbridge::proxy
