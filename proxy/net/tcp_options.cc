// SPDX-License-Identifier: Apache-2.0
#include "proxy/net/tcp_options.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace popbridge::proxy {
namespace {

bool set_int_option(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof(value)) == 0;
}

}  // namespace

bool set_tcp_options(int fd, const TcpKeepAlive& keepalive) {
  bool ok = set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  ok = set_int_option(fd, SOL_SOCKET, SO_KEEPALIVE, 1) && ok;
  ok =
      set_int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE, static_cast<int>(keepalive.idle_seconds)) && ok;
  ok = set_int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL,
                      static_cast<int>(keepalive.interval_seconds)) &&
       ok;
  ok = set_int_option(fd, IPPROTO_TCP, TCP_KEEPCNT, static_cast<int>(keepalive.count)) && ok;
  return ok;
}

}  // namespace popbridge::proxy
