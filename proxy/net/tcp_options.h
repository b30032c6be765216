// SPDX-License-Identifier: Apache-2.0
#pragma once

namespace popbridge::proxy {

// TCP keep-alive probing, all four options set by popbridge itself: libuv's
// uv_tcp_keepalive sets a probe interval and count of its own (1 s x 10), and a
// 10-second network blip would then kill every idle connection. These defaults ride out
// a couple of minutes.
struct TcpKeepAlive {
  unsigned idle_seconds = 60;
  unsigned interval_seconds = 30;
  unsigned count = 4;
};

// TCP_NODELAY (replies are whole lines, written at once) and keep-alive probing.
// Returns false if the socket refused any of them.
bool set_tcp_options(int fd, const TcpKeepAlive& keepalive);

// Linux gives an accepted socket the listening socket's options, these included, and
// arms its keep-alive timer, so a listener that has them saves five system calls on
// every connection it accepts. Elsewhere each connection sets its own.
#ifdef __linux__
inline constexpr bool kAcceptedSocketsInheritTcpOptions = true;
#else
inline constexpr bool kAcceptedSocketsInheritTcpOptions = false;
#endif

}  // namespace popbridge::proxy
