// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "proxy/net/connection.h"
#include "proxy/net/tcp_options.h"

namespace popbridge::proxy {
namespace {

struct RecordingHandler : Connection::Handler {
  int status = 1;
  std::size_t received = 0;
  void on_connected(int result) override { status = result; }
  void on_data(std::string_view bytes) override { received += bytes.size(); }
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

// Whether the socket wakes a poller within a second (honouring SO_RCVLOWAT, as epoll does).
bool readable(Connection& connection) {
  uv_os_fd_t fd = -1;
  EXPECT_EQ(uv_fileno(reinterpret_cast<uv_handle_t*>(connection.stream()), &fd), 0);
  pollfd wanted{fd, POLLIN, 0};
  return poll(&wanted, 1, 1000) == 1;
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

// A listening socket on a loop, and connections to it: what a Connection sets on its socket.
class ConnectionSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    ASSERT_EQ(uv_tcp_init(&loop_, &listener_), 0);
    sockaddr_in address{};
    ASSERT_EQ(uv_ip4_addr("127.0.0.1", 0, &address), 0);
    ASSERT_EQ(uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&address), 0), 0);
    ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 4, [](uv_stream_t*, int) {}),
              0);
    int length = sizeof(bound_);
    ASSERT_EQ(uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound_), &length), 0);
  }
  void TearDown() override {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  // A connection to the listener, once connected (status 0 in handler).
  ConnectionPtr connect(RecordingHandler& handler, std::optional<TcpKeepAlive> keepalive) {
    ConnectionPtr connection = Connection::create(&loop_, &handler);
    if (keepalive) {
      connection->set_keepalive(*keepalive);
    }
    EXPECT_EQ(connection->connect(reinterpret_cast<const sockaddr*>(&bound_)), 0);
    for (int turn = 0; turn < 1000 && handler.status == 1; ++turn) {
      uv_run(&loop_, UV_RUN_ONCE);
    }
    EXPECT_EQ(handler.status, 0);
    return connection;
  }
  // The listener's end of the connection connect() made; null if there is none.
  ConnectionPtr accept_one() {
    ConnectionPtr accepted = Connection::create(&loop_, nullptr);
    if (uv_accept(reinterpret_cast<uv_stream_t*>(&listener_), accepted->stream()) != 0) {
      return nullptr;  // released: closed and freed in its close callback
    }
    return accepted;
  }
  std::uint16_t listening_port() const {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&bound_)->sin_port);
  }

  uv_loop_t loop_;
  uv_tcp_t listener_;
  sockaddr_storage bound_{};
};

// All four options are set by Connection itself: libuv's uv_tcp_keepalive would set a probe
// interval and count of its own (1 s x 10), and a 10-second blip would then drop every idle
// upstream connection.
TEST_F(ConnectionSocket, IdleIntervalAndCountReachTheSocket) {
  RecordingHandler handler;
  ConnectionPtr connection = connect(handler, TcpKeepAlive{7, 3, 5});
  EXPECT_EQ(socket_option(*connection, SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(socket_option(*connection, IPPROTO_TCP, TCP_KEEPIDLE), 7);
  EXPECT_EQ(socket_option(*connection, IPPROTO_TCP, TCP_KEEPINTVL), 3);
  EXPECT_EQ(socket_option(*connection, IPPROTO_TCP, TCP_KEEPCNT), 5);
  connection->close();
}

// Linux hands a listener's options to the sockets it accepts, keep-alive timer armed, so
// the gateway sets them once per listener instead of five calls per connection.
TEST_F(ConnectionSocket, AcceptedSocketsTakeTheListenersOptions) {
  if (!kAcceptedSocketsInheritTcpOptions) {
    GTEST_SKIP() << "accepted sockets set their own options on this system";
  }
  uv_os_fd_t listener_fd = -1;
  ASSERT_EQ(uv_fileno(reinterpret_cast<uv_handle_t*>(&listener_), &listener_fd), 0);
  ASSERT_TRUE(set_tcp_options(listener_fd, {11, 5, 6}));

  RecordingHandler handler;
  ConnectionPtr client = connect(handler, std::nullopt);
  ConnectionPtr accepted = accept_one();
  ASSERT_NE(accepted, nullptr);
  accepted->configure_socket(Connection::TcpOptions::kInherited);

  EXPECT_EQ(socket_option(*accepted, IPPROTO_TCP, TCP_NODELAY), 1);
  EXPECT_EQ(socket_option(*accepted, SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(socket_option(*accepted, IPPROTO_TCP, TCP_KEEPIDLE), 11);
  EXPECT_EQ(socket_option(*accepted, IPPROTO_TCP, TCP_KEEPINTVL), 5);
  EXPECT_EQ(socket_option(*accepted, IPPROTO_TCP, TCP_KEEPCNT), 6);
  const std::string timer = tcp_timer(listening_port(), accepted->peer_port());
  EXPECT_EQ(timer.substr(0, 2), "02") << "no keep-alive timer on the accepted socket: " << timer;
  accepted->close();
  client->close();
}

// A large literal is read in large reads: the socket wakes the loop only once kLargeRead
// bytes are there. Less than that expected, and it wakes for every byte again.
TEST_F(ConnectionSocket, ALargeExpectedReadSetsTheSocketsLowWatermark) {
  RecordingHandler handler;
  ConnectionPtr connection = connect(handler, std::nullopt);
  EXPECT_EQ(socket_option(*connection, SOL_SOCKET, SO_RCVLOWAT), 1);
  connection->expect_bytes(5 * 1024 * 1024);
  EXPECT_EQ(socket_option(*connection, SOL_SOCKET, SO_RCVLOWAT),
            static_cast<int>(Connection::kLargeRead));
  connection->expect_bytes(Connection::kLargeRead - 1);
  EXPECT_EQ(socket_option(*connection, SOL_SOCKET, SO_RCVLOWAT), 1);
  connection->close();
}

// What a slow peer sent while a large read was awaited stays in the socket, where a
// silence timer finds it: the connection then hands up bytes as they come, for good.
TEST_F(ConnectionSocket, BytesShortOfALargeReadMakeASlowPeerNotASilentOne) {
  RecordingHandler client_handler;
  ConnectionPtr client = connect(client_handler, std::nullopt);
  ConnectionPtr accepted = accept_one();
  ASSERT_NE(accepted, nullptr);
  EXPECT_EQ(client->check_silence(), Connection::Silence::kSilent);
  client->expect_bytes(1024 * 1024);
  client->start_reading();
  accepted->write(std::string(1000, 'x'));
  for (int turn = 0; turn < 10000 && client->unread_socket_bytes() < 1000; ++turn) {
    uv_run(&loop_, UV_RUN_NOWAIT);
  }
  ASSERT_EQ(client->unread_socket_bytes(), 1000u);
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(client_handler.received, 0u) << "woken for less than a large read";
  EXPECT_EQ(client->check_silence(), Connection::Silence::kSlowPeer);
  for (int turn = 0; turn < 10000 && client_handler.received < 1000; ++turn) {
    uv_run(&loop_, UV_RUN_NOWAIT);
  }
  EXPECT_EQ(client_handler.received, 1000u);
  EXPECT_EQ(client->unread_socket_bytes(), 0u);
  client->expect_bytes(1024 * 1024);
  EXPECT_EQ(socket_option(*client, SOL_SOCKET, SO_RCVLOWAT), 1) << "a slow peer stays slow";

  // Bytes that the loop is about to read (they came in the timer's own turn) are no
  // silence, and no slowness either. The loop does not run until they are checked.
  accepted->write("y");
  ASSERT_TRUE(readable(*client));
  EXPECT_EQ(client->check_silence(), Connection::Silence::kBytesWaiting);
  // Unless the connection does not read: then nothing takes them up.
  client->stop_reading();
  EXPECT_EQ(client->check_silence(), Connection::Silence::kSilent);
  accepted->close();
  client->close();
}

// A large read that is there when the timer expires (the next poll takes it) is no silence,
// and the connection goes on reading large.
TEST_F(ConnectionSocket, ALargeReadThatHasArrivedIsNoSilence) {
  RecordingHandler client_handler;
  ConnectionPtr client = connect(client_handler, std::nullopt);
  ConnectionPtr accepted = accept_one();
  ASSERT_NE(accepted, nullptr);
  client->expect_bytes(1024 * 1024);
  client->start_reading();
  // Straight to the socket, not through the loop, which would read the bytes at once.
  uv_os_fd_t fd = -1;
  ASSERT_EQ(uv_fileno(reinterpret_cast<uv_handle_t*>(accepted->stream()), &fd), 0);
  const std::string bytes(Connection::kLargeRead, 'z');
  for (std::size_t sent = 0; sent < bytes.size();) {
    pollfd writable{fd, POLLOUT, 0};
    ASSERT_EQ(poll(&writable, 1, 1000), 1);
    const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, 0);
    ASSERT_GT(n, 0);
    sent += static_cast<std::size_t>(n);
  }
  ASSERT_TRUE(readable(*client));
  EXPECT_EQ(client->check_silence(), Connection::Silence::kBytesWaiting);
  client->expect_bytes(1024 * 1024);
  EXPECT_EQ(socket_option(*client, SOL_SOCKET, SO_RCVLOWAT),
            static_cast<int>(Connection::kLargeRead));
  accepted->close();
  client->close();
}

}  // namespace
}  // namespace popbridge::proxy
