// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <string>

#include "proxy/net/connection.h"

namespace popbridge::proxy {
namespace {

struct Receiver : Connection::Handler {
  std::string received;
  void on_connected(int) override {}
  void on_data(std::string_view bytes) override { received.append(bytes); }
  void on_disconnected(std::string_view) override {}
};

struct Sender : Connection::Handler {
  int status = 1;
  int drained = 0;
  void on_connected(int result) override { status = result; }
  void on_data(std::string_view) override {}
  void on_disconnected(std::string_view) override {}
  void on_drained() override { ++drained; }
};

// A sender connected to a receiver that reads only when told to, on one loop.
class ConnectionWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    ASSERT_EQ(uv_tcp_init(&loop_, &listener_), 0);
    listener_.data = this;
    sockaddr_in address{};
    ASSERT_EQ(uv_ip4_addr("127.0.0.1", 0, &address), 0);
    ASSERT_EQ(uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&address), 0), 0);
    ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 4, &ConnectionWrite::on_accept),
              0);
    sockaddr_storage bound{};
    int length = sizeof(bound);
    ASSERT_EQ(uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &length), 0);

    sending_ = Connection::create(&loop_, &sender_);
    ASSERT_EQ(sending_->connect(reinterpret_cast<const sockaddr*>(&bound)), 0);
    run_until([&] { return sender_.status != 1 && receiving_ != nullptr; });
    ASSERT_EQ(sender_.status, 0);
    ASSERT_NE(receiving_, nullptr);
  }

  void TearDown() override {
    sending_.reset();
    receiving_.reset();
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  static void on_accept(uv_stream_t* server, int status) {
    auto* self = static_cast<ConnectionWrite*>(server->data);
    if (status != 0) {
      return;
    }
    self->receiving_ = Connection::create(&self->loop_, &self->receiver_);
    ASSERT_EQ(uv_accept(server, self->receiving_->stream()), 0);
  }

  // Runs the loop until the condition holds or a turn limit passes: a deadline in turns,
  // since every turn here waits on loopback I/O that is already under way.
  template <typename Condition>
  bool run_until(Condition done) {
    for (int turn = 0; turn < 100000 && !done(); ++turn) {
      uv_run(&loop_, UV_RUN_ONCE);
    }
    return done();
  }

  uv_loop_t loop_{};
  uv_tcp_t listener_{};
  Sender sender_;
  Receiver receiver_;
  ConnectionPtr sending_;
  ConnectionPtr receiving_;
};

std::string pattern(std::size_t size, char seed) {
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<char>(seed + static_cast<char>((i * 7) % 61));
  }
  return bytes;
}

// A reply the socket takes whole leaves inside write() itself, without a loop turn: the
// path that spares libuv's write queue and its POLLOUT watcher.
TEST_F(ConnectionWrite, ReplyTheSocketTakesLeavesAtOnce) {
  sending_->write("+OK 2 320\r\n");
  EXPECT_EQ(sending_->bytes_sent(), 11u);
  EXPECT_EQ(sending_->pending_bytes(), 0u);
  sending_->write("+OK bye\r\n");
  EXPECT_EQ(sending_->bytes_sent(), 20u);

  receiving_->start_reading();
  ASSERT_TRUE(run_until([&] { return receiver_.received.size() == 20; }));
  EXPECT_EQ(receiver_.received, "+OK 2 320\r\n+OK bye\r\n");
}

// More than the socket buffers hold (a send buffer of at most 4 MiB, and a receive
// buffer that does not grow while nobody reads), with a receiver that is not reading: the first
// part leaves at once, the rest through libuv's queue, and what is written meanwhile queues behind
// it. Nothing may be lost, repeated or reordered at the seams.
TEST_F(ConnectionWrite, PartialWriteKeepsOrderWithLaterWrites) {
  sending_->set_high_watermark(std::size_t{1} << 30);  // keep the at-once path open
  const std::string first = pattern(std::size_t{16} << 20, 'A');
  const std::string second = pattern(100000, 'a');
  const std::string third = "\r\n.\r\n";

  sending_->write(first);
  const std::uint64_t sent_at_once = sending_->bytes_sent();
  EXPECT_GT(sent_at_once, 0u);            // the socket took part of it now
  EXPECT_LT(sent_at_once, first.size());  // and not all: the rest waits in the queue
  EXPECT_EQ(sending_->pending_bytes(), first.size() - sent_at_once);
  sending_->write(second);
  sending_->write(third);

  receiving_->start_reading();
  const std::size_t total = first.size() + second.size() + third.size();
  ASSERT_TRUE(run_until(
      [&] { return receiver_.received.size() >= total && sending_->pending_bytes() == 0; }));
  ASSERT_EQ(receiver_.received.size(), total);
  EXPECT_TRUE(receiver_.received.compare(0, first.size(), first) == 0);
  EXPECT_TRUE(receiver_.received.compare(first.size(), second.size(), second) == 0);
  EXPECT_EQ(receiver_.received.substr(first.size() + second.size()), third);
  EXPECT_EQ(sending_->bytes_sent(), total);
}

// Above the high watermark the at-once path stays shut until the queue drains below the
// low one, and the owner hears of the drain once.
TEST_F(ConnectionWrite, BackpressureDrainsThroughTheQueue) {
  sending_->set_high_watermark(64 * 1024);
  sending_->set_low_watermark(16 * 1024);
  const std::string body = pattern(std::size_t{8} << 20, '0');
  sending_->write(body);
  EXPECT_TRUE(sending_->above_high_watermark());
  sending_->write("tail");
  EXPECT_EQ(sender_.drained, 0);

  receiving_->start_reading();
  ASSERT_TRUE(run_until([&] { return receiver_.received.size() >= body.size() + 4; }));
  ASSERT_TRUE(run_until([&] { return sender_.drained > 0; }));
  EXPECT_EQ(sender_.drained, 1);
  EXPECT_EQ(receiver_.received.size(), body.size() + 4);
  EXPECT_TRUE(receiver_.received.compare(0, body.size(), body) == 0);
  EXPECT_EQ(receiver_.received.substr(body.size()), "tail");

  sending_->write("+OK\r\n");  // drained: at once again
  EXPECT_EQ(sending_->pending_bytes(), 0u);
}

}  // namespace
}  // namespace popbridge::proxy
