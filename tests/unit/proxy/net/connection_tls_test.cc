// SPDX-License-Identifier: Apache-2.0
// Connection's TLS path on a real loop and a real loopback socket: the transport that
// reads ciphertext in place, records sealed in full when writes come in small pieces, and
// decrypted input handed up in large chunks.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "proxy/base/uv_handle.h"
#include "proxy/net/connection.h"
#include "proxy/net/tls_context.h"
#include "tests/support/http_test_server.h"

namespace popbridge::proxy {
namespace {

using namespace std::chrono_literals;

// TLS 1.3 adds 5 header bytes, 1 content-type byte and a 16-byte tag to every record.
constexpr std::size_t kRecordOverhead = 22;

// TLS 1.2 with AES-GCM adds 5 header bytes, an 8-byte explicit nonce and a 16-byte tag.
constexpr std::size_t kTls12RecordOverhead = 29;

struct Peer : Connection::Handler {
  ConnectionPtr connection;
  std::string received;
  std::size_t chunks = 0;
  bool established = false;
  bool connected = false;
  std::string disconnected;
  std::function<void()> when_established;
  std::function<void(std::string_view)> when_data;

  void on_connected(int status) override { connected = status == 0; }
  void on_tls_established() override {
    established = true;
    if (when_established) {
      when_established();
    }
  }
  void on_data(std::string_view bytes) override {
    received.append(bytes);
    ++chunks;
    if (when_data) {
      when_data(bytes);
    }
  }
  void on_disconnected(std::string_view reason) override { disconnected = reason; }
};

std::string pattern(std::size_t size) {
  std::string text(size, '\0');
  for (std::size_t i = 0; i < size; ++i) {
    text[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  }
  return text;
}

class ConnectionTlsTest : public ::testing::Test {
 protected:
  ConnectionTlsTest() : listener_(init_loop()) {
    listener_.get()->data = this;
    server_context_ = pki_.server_context("IP:127.0.0.1");
    TlsContextResult client = make_client_context(pki_.ca_file(), true);
    EXPECT_NE(client.context, nullptr) << client.error;
    client_context_ = std::move(client.context);
    sockaddr_in address{};
    uv_ip4_addr("127.0.0.1", 0, &address);
    EXPECT_EQ(uv_tcp_bind(listener_.get(), reinterpret_cast<const sockaddr*>(&address), 0), 0);
    EXPECT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(listener_.get()), 4, &on_accept), 0);
    int length = sizeof(address);
    uv_tcp_getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
  }

  ~ConnectionTlsTest() override {
    server_.connection.reset();
    client_.connection.reset();
    listener_.close();
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (uv_loop_alive(&loop_) != 0 && std::chrono::steady_clock::now() < deadline) {
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a libuv handle was left open";
  }

  std::function<int(uv_tcp_t*)> init_loop() {
    uv_loop_init(&loop_);
    return [this](uv_tcp_t* handle) { return uv_tcp_init(&loop_, handle); };
  }

  static void on_accept(uv_stream_t* listener, int status) noexcept {
    auto* self = static_cast<ConnectionTlsTest*>(listener->data);
    if (self == nullptr || status != 0 || self->accepting_->connection) {
      return;
    }
    Peer& server = *self->accepting_;
    server.connection = Connection::create(&self->loop_, &server);
    ASSERT_EQ(uv_accept(listener, server.connection->stream()), 0);
    ASSERT_TRUE(
        server.connection->start_tls(self->server_context_.get(), Connection::Role::kServer, ""));
    server.connection->start_reading();
  }

  // Connects the client and starts its handshake; the server side is accepted on the loop.
  void connect_client() { connect(client_, client_context_.get()); }
  void connect(Peer& client, SSL_CTX* context) {
    client.connection = Connection::create(&loop_, &client);
    sockaddr_in address{};
    uv_ip4_addr("127.0.0.1", port_, &address);
    ASSERT_EQ(client.connection->connect(reinterpret_cast<const sockaddr*>(&address)), 0);
    ASSERT_TRUE(run_until([&] { return client.connected; }));
    ASSERT_TRUE(client.connection->start_tls(context, Connection::Role::kClient, "127.0.0.1"));
    client.connection->start_reading();
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
    return http_testing::run_loop_until(&loop_, done, limit);
  }

  uv_loop_t loop_{};
  UvHandle<uv_tcp_t> listener_;
  http_testing::TestPki pki_;
  SslCtxPtr server_context_;
  SslCtxPtr client_context_;
  std::uint16_t port_ = 0;
  Peer server_;
  Peer client_;
  Peer* accepting_ = &server_;  // where the next accepted connection goes
};

TEST_F(ConnectionTlsTest, SmallWritesArriveWholeInFullSizeRecords) {
  const std::string payload = pattern(4 * 1024 * 1024);
  // One write goes out at once; the rest, written while it is in flight, must be sealed
  // together: 1 KiB records would add 4,096 x 22 bytes of overhead.
  server_.when_established = [&] {
    for (std::size_t at = 0; at < payload.size(); at += 1024) {
      server_.connection->write(std::string_view(payload).substr(at, 1024));
    }
  };
  connect_client();
  ASSERT_TRUE(run_until([&] { return client_.received.size() >= payload.size(); }))
      << client_.received.size() << " of " << payload.size() << "; " << client_.disconnected;
  EXPECT_TRUE(client_.received == payload);
  const std::size_t overhead = client_.connection->bytes_received() - payload.size();
  // The handshake and session tickets take a few KiB; 16 KiB records ~260 x 22 bytes more.
  EXPECT_LT(overhead, 16 * 1024 + (payload.size() / 16384 + 8) * kRecordOverhead);
  // Decrypted records are handed up together, not one upcall per record.
  EXPECT_LE(client_.chunks, payload.size() / 32768);
}

TEST_F(ConnectionTlsTest, RepliesToOneReadLeaveInOneRecord) {
  // TLS 1.2: nothing follows the handshake unasked (1.3 sends session tickets), so every
  // octet counted afterwards is the reply's.
  SSL_CTX_set_max_proto_version(client_context_.get(), TLS1_2_VERSION);
  const std::string body = pattern(4096);
  server_.when_data = [&](std::string_view) {
    server_.connection->write("+OK 4096 octets\r\n");
    server_.connection->write(body);
    server_.connection->write(".\r\n");
  };
  connect_client();
  ASSERT_TRUE(run_until([&] { return client_.established; }));
  const std::uint64_t before = client_.connection->bytes_received();
  client_.connection->write("RETR 1\r\n");
  const std::string reply = "+OK 4096 octets\r\n" + body + ".\r\n";
  ASSERT_TRUE(run_until([&] { return client_.received.size() >= reply.size(); }));
  EXPECT_TRUE(client_.received == reply);
  // Three writes while the request was being handled: one record, not two or three.
  EXPECT_EQ(client_.connection->bytes_received() - before, reply.size() + kTls12RecordOverhead);
}

TEST_F(ConnectionTlsTest, WhatIsWrittenBeforeTheHandshakeFollowsIt) {
  connect_client();
  client_.connection->write("first ");
  client_.connection->write("second");
  EXPECT_FALSE(client_.established);
  EXPECT_GT(client_.connection->pending_bytes(), 0u);
  ASSERT_TRUE(run_until([&] { return server_.received.size() >= 12; }));
  EXPECT_EQ(server_.received, "first second");
}

// A record that arrives slowly re-arms no timer (nothing is handed up until it is whole),
// so a silence timer asks: bytes came since the peer was last heard, or since the last
// check, and the peer is coming; none since, and it is silent.
TEST_F(ConnectionTlsTest, PartOfARecordIsNoSilenceUntilACheckFindsNothingMore) {
  SSL_CTX_set_max_proto_version(client_context_.get(), TLS1_2_VERSION);  // no tickets after
  connect_client();
  ASSERT_TRUE(run_until([&] { return client_.established && server_.established; }));
  server_.connection->write("whole");
  ASSERT_TRUE(run_until([&] { return client_.received == "whole"; }));
  EXPECT_EQ(client_.connection->check_silence(), Connection::Silence::kSilent);

  // A record's header alone, straight to the socket: the engine waits for the rest.
  uv_os_fd_t fd = -1;
  ASSERT_EQ(uv_fileno(reinterpret_cast<uv_handle_t*>(server_.connection->stream()), &fd), 0);
  const unsigned char header[] = {0x17, 0x03, 0x03, 0x00, 0x40};
  ASSERT_EQ(send(fd, header, sizeof(header), 0), static_cast<ssize_t>(sizeof(header)));
  const std::uint64_t before = client_.connection->bytes_received();
  ASSERT_TRUE(run_until([&] { return client_.connection->bytes_received() == before + 5; }));
  EXPECT_EQ(client_.received, "whole");
  EXPECT_EQ(client_.connection->check_silence(), Connection::Silence::kRecordArriving);
  EXPECT_EQ(client_.connection->check_silence(), Connection::Silence::kSilent);
}

// The bytes that made a peer slow are not news again once read: a peer that stopped after
// them is silent at the next check, within twice the timeout.
TEST_F(ConnectionTlsTest, BytesThatMadeAPeerSlowAreNotCountedAgainOnceRead) {
  SSL_CTX_set_max_proto_version(client_context_.get(), TLS1_2_VERSION);  // no tickets after
  connect_client();
  ASSERT_TRUE(run_until([&] { return client_.established && server_.established; }));
  client_.connection->expect_bytes(1024 * 1024);  // a large read awaited

  // A record's header and part of its body, straight to the socket.
  uv_os_fd_t fd = -1;
  ASSERT_EQ(uv_fileno(reinterpret_cast<uv_handle_t*>(server_.connection->stream()), &fd), 0);
  std::string partial = {0x17, 0x03, 0x03, 0x40, 0x00};
  partial.append(1000, 'r');
  ASSERT_EQ(send(fd, partial.data(), partial.size(), 0), static_cast<ssize_t>(partial.size()));
  // Below the watermark nothing wakes the loop: look at the socket without running it.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (client_.connection->unread_socket_bytes() < partial.size() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_EQ(client_.connection->unread_socket_bytes(), partial.size());
  const std::uint64_t before = client_.connection->bytes_received();
  EXPECT_EQ(client_.connection->check_silence(), Connection::Silence::kSlowPeer);
  ASSERT_TRUE(
      run_until([&] { return client_.connection->bytes_received() == before + partial.size(); }));
  EXPECT_EQ(client_.connection->check_silence(), Connection::Silence::kSilent);
}

TEST_F(ConnectionTlsTest, AGracefulCloseSendsEverythingStagedBeforeTheCloseNotify) {
  const std::string payload = pattern(512 * 1024);
  server_.when_established = [&] {
    for (std::size_t at = 0; at < payload.size(); at += 4096) {
      server_.connection->write(std::string_view(payload).substr(at, 4096));
    }
    server_.connection->close_after_flush();
  };
  connect_client();
  ASSERT_TRUE(run_until([&] { return !client_.disconnected.empty(); }))
      << client_.received.size() << " of " << payload.size();
  EXPECT_TRUE(client_.received == payload) << client_.received.size();
  EXPECT_EQ(client_.disconnected, "peer closed the TLS session");
}

TEST_F(ConnectionTlsTest, BothDirectionsAtOnceStayInOrder) {
  const std::string upward = pattern(300 * 1000);
  const std::string downward = pattern(700 * 1000);
  server_.when_established = [&] {
    for (std::size_t at = 0; at < downward.size(); at += 333) {
      server_.connection->write(std::string_view(downward).substr(at, 333));
    }
  };
  client_.when_established = [&] {
    for (std::size_t at = 0; at < upward.size(); at += 777) {
      client_.connection->write(std::string_view(upward).substr(at, 777));
    }
  };
  connect_client();
  ASSERT_TRUE(run_until([&] {
    return server_.received.size() >= upward.size() && client_.received.size() >= downward.size();
  }));
  EXPECT_TRUE(server_.received == upward);
  EXPECT_TRUE(client_.received == downward);
}

// A client context keeps the sessions servers hand out: the next connection to the same
// server at the same address resumes (no certificate signature, no chain to verify).
TEST_F(ConnectionTlsTest, TheNextConnectionToTheSameServerResumesItsSession) {
  std::vector<std::unique_ptr<Peer>> peers;
  auto session = [&](SSL_CTX* context) {
    peers.push_back(std::make_unique<Peer>());
    Peer& server = *peers.back();
    peers.push_back(std::make_unique<Peer>());
    Peer& client = *peers.back();
    accepting_ = &server;
    server.when_established = [&server] { server.connection->write("hello\r\n"); };
    connect(client, context);
    // TLS 1.3 tickets follow the handshake: the client has them once it read past it.
    EXPECT_TRUE(run_until([&] { return client.received == "hello\r\n"; }));
    const std::string summary = client.connection->tls_summary();
    client.connection->close();
    EXPECT_TRUE(run_until([&] { return !server.disconnected.empty(); }));
    return summary;
  };
  EXPECT_FALSE(session(client_context_.get()).ends_with(" resumed"));
  EXPECT_TRUE(session(client_context_.get()).ends_with(" resumed"));
  EXPECT_TRUE(session(client_context_.get()).ends_with(" resumed")) << "new tickets each time";
  // Sessions belong to their context: another one (a reload) starts with a full handshake.
  TlsContextResult other = make_client_context(pki_.ca_file(), true);
  ASSERT_NE(other.context, nullptr);
  EXPECT_FALSE(session(other.context.get()).ends_with(" resumed"));
}

}  // namespace
}  // namespace popbridge::proxy
