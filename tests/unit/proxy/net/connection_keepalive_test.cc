// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "proxy/net/connection.h"
#include "proxy/net/tcp_options.h"

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

std::uint16_t local_port(uv_tcp_t* handle) {
  sockaddr_storage name{};
  int length = sizeof(name);
  EXPECT_EQ(uv_tcp_getsockname(handle, reinterpret_cast<sockaddr*>(&name), &length), 0);
  return ntohs(reinterpret_cast<sockaddr_in*>(&name)->sin_port);
}

// The kernel's timer for the IPv4 socket from local_port to remote_port, as
// /proc/net/tcp shows it: "02" is keep-alive, followed by the jiffies left.
std::string tcp_timer(std::uint16_t local_port, std::uint16_t remote_port) {
  std::ifstream table("/proc/net/tcp");
  char wanted[32];
  std::snprintf(wanted, sizeof(wanted), "0100007F:%04X 0100007F:%04X", local_port, remote_port);
  for (std::string line; std::getline(table, line);) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer;
    fields >> slot >> local >> remote >> state >> queues >> timer;
    if (local + " " + remote == wanted) {
      return timer;
    }
  }
  return "not found";
}

// Linux hands a listener's options to the sockets it accepts, keep-alive timer armed, so
// the gateway sets them once per listener instead of five calls per connection.
TEST(ConnectionKeepAlive, AcceptedSocketsTakeTheListenersOptions) {
  if (!kAcceptedSocketsInheritTcpOptions) {
    GTEST_SKIP() << "accepted sockets set their own options on this system";
  }
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  uv_tcp_t listener;
  ASSERT_EQ(uv_tcp_init(&loop, &listener), 0);
  sockaddr_in address{};
  ASSERT_EQ(uv_ip4_addr("127.0.0.1", 0, &address), 0);
  ASSERT_EQ(uv_tcp_bind(&listener, reinterpret_cast<const sockaddr*>(&address), 0), 0);
  uv_os_fd_t listener_fd = -1;
  ASSERT_EQ(uv_fileno(reinterpret_cast<uv_handle_t*>(&listener), &listener_fd), 0);
  ASSERT_TRUE(set_tcp_options(listener_fd, {11, 5, 6}));
  ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 4, [](uv_stream_t*, int) {}), 0);
  sockaddr_storage bound{};
  int length = sizeof(bound);
  ASSERT_EQ(uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&bound), &length), 0);

  RecordingHandler client_handler;
  {
    ConnectionPtr client = Connection::create(&loop, &client_handler);
    ASSERT_EQ(client->connect(reinterpret_cast<const sockaddr*>(&bound)), 0);
    for (int turn = 0; turn < 1000 && client_handler.status == 1; ++turn) {
      uv_run(&loop, UV_RUN_ONCE);
    }
    ASSERT_EQ(client_handler.status, 0);
    ConnectionPtr accepted = Connection::create(&loop, nullptr);
    ASSERT_EQ(uv_accept(reinterpret_cast<uv_stream_t*>(&listener), accepted->stream()), 0);
    accepted->configure_socket(Connection::TcpOptions::kInherited);

    EXPECT_EQ(socket_option(*accepted, IPPROTO_TCP, TCP_NODELAY), 1);
    EXPECT_EQ(socket_option(*accepted, SOL_SOCKET, SO_KEEPALIVE), 1);
    EXPECT_EQ(socket_option(*accepted, IPPROTO_TCP, TCP_KEEPIDLE), 11);
    EXPECT_EQ(socket_option(*accepted, IPPROTO_TCP, TCP_KEEPINTVL), 5);
    EXPECT_EQ(socket_option(*accepted, IPPROTO_TCP, TCP_KEEPCNT), 6);
    const std::string timer = tcp_timer(local_port(&listener), accepted->peer_port());
    EXPECT_EQ(timer.substr(0, 2), "02") << "no keep-alive timer on the accepted socket: " << timer;
    accepted->close();
    client->close();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace popbridge::proxy
