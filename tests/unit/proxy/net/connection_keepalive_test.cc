// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <uv.h>

#include "proxy/net/connection.h"

namespace popbridge::proxy {
namespace {

struct RecordingHandler : Connection::Handler {
  int status = 1;
  void on_connected(int result) override { status = result; }
  void on_data(std::string_view) override {}
  void on_disconnected(std::string_view) override {}
};

int socket_option(Connection& connection, int level, int name) {
  uv_os_fd_t fd = -1;
  EXPECT_EQ(uv_fileno(reinterpret_cast<uv_handle_t*>(connection.stream()), &fd), 0);
  int value = -1;
  socklen_t length = sizeof(value);
  EXPECT_EQ(getsockopt(fd, level, name, &value, &length), 0);
  return value;
}

// All four options are set by Connection itself: libuv's uv_tcp_keepalive would set a probe
// interval and count of its own (1 s x 10), and a 10-second blip would then drop every idle
// upstream connection.
TEST(ConnectionKeepAlive, IdleIntervalAndCountReachTheSocket) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  uv_tcp_t listener;
  ASSERT_EQ(uv_tcp_init(&loop, &listener), 0);
  sockaddr_in address{};
  ASSERT_EQ(uv_ip4_addr("127.0.0.1", 0, &address), 0);
  ASSERT_EQ(uv_tcp_bind(&listener, reinterpret_cast<const sockaddr*>(&address), 0), 0);
  ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 4, [](uv_stream_t*, int) {}), 0);
  sockaddr_storage bound{};
  int length = sizeof(bound);
  ASSERT_EQ(uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&bound), &length), 0);

  RecordingHandler handler;
  {
    ConnectionPtr connection = Connection::create(&loop, &handler);
    connection->set_keepalive({7, 3, 5});
    ASSERT_EQ(connection->connect(reinterpret_cast<const sockaddr*>(&bound)), 0);
    for (int turn = 0; turn < 1000 && handler.status == 1; ++turn) {
      uv_run(&loop, UV_RUN_ONCE);
    }
    ASSERT_EQ(handler.status, 0);
    EXPECT_EQ(socket_option(*connection, SOL_SOCKET, SO_KEEPALIVE), 1);
    EXPECT_EQ(socket_option(*connection, IPPROTO_TCP, TCP_KEEPIDLE), 7);
    EXPECT_EQ(socket_option(*connection, IPPROTO_TCP, TCP_KEEPINTVL), 3);
    EXPECT_EQ(socket_option(*connection, IPPROTO_TCP, TCP_KEEPCNT), 5);
    connection->close();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace popbridge::proxy
