// SPDX-License-Identifier: Apache-2.0
// The HTTP client's streaming-body mode (HttpRequest::body_receiver): a download of any
// size reaches the receiver piece by piece, can be paused and resumed, and stopped.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "proxy/net/http_client.h"
#include "tests/support/http_test_server.h"

namespace popbridge::proxy {
namespace {

using namespace std::chrono_literals;
using namespace http_testing;

// Collects the body; pauses the request after the first piece when asked; stops after
// stop_after octets.
class Receiver final : public protocol::HttpBodyReceiver {
 public:
  bool on_response_head(int status, const std::vector<protocol::HttpHeader>&) override {
    heads.push_back(status);
    return status == 200;
  }
  bool on_body_data(std::string_view data) override {
    body.append(data);
    piece_ends.push_back(body.size());
    ++pieces;
    if (pause_after_first && pieces == 1) {
      handle->pause_reading();
    }
    return body.size() < stop_after;
  }
  std::vector<int> heads;
  std::string body;
  std::size_t pieces = 0;
  std::vector<std::size_t> piece_ends;  // body size after each piece
  bool pause_after_first = false;
  std::size_t stop_after = SIZE_MAX;
  HttpClient::RequestHandle* handle = nullptr;
};

class HttpClientStreamTest : public HttpClientTest {
 protected:
  HttpRequest download(const TestServer& server, Receiver& receiver) {
    HttpRequest request = get(server.url("/blob"));
    request.body_receiver = &receiver;
    return request;
  }
};

TEST_F(HttpClientStreamTest, ABodyFarPastTheLimitStreamsToTheReceiver) {
  const std::string blob(3 * 1024 * 1024 + 17, 'b');
  TestServer server(&loop_, [&](const SeenRequest&) { return Reply{response(200, blob)}; });
  HttpClientOptions options;
  options.max_response_body_bytes = 1024;
  HttpClient client(&loop_, options);
  Receiver receiver;
  const HttpResult result = fetch(client, download(server, receiver));
  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_TRUE(result.streamed);
  EXPECT_TRUE(result.body.empty());
  EXPECT_EQ(receiver.heads, std::vector<int>{200});
  EXPECT_EQ(receiver.body.size(), blob.size());
  EXPECT_EQ(receiver.body, blob);
  EXPECT_GT(receiver.pieces, 1u);
}

TEST_F(HttpClientStreamTest, AnErrorPageIsCollectedNotStreamed) {
  TestServer server(&loop_, [](const SeenRequest&) { return Reply{response(404, "gone")}; });
  HttpClient client(&loop_);
  Receiver receiver;
  const HttpResult result = fetch(client, download(server, receiver));
  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_EQ(result.status, 404);
  EXPECT_FALSE(result.streamed);
  EXPECT_EQ(result.body, "gone");
  EXPECT_TRUE(receiver.body.empty());
}

TEST_F(HttpClientStreamTest, PausedReadingWaitsForResumeAndTheTimeoutCountsSilenceOnly) {
  const std::string blob(8 * 1024 * 1024, 'p');
  TestServer server(&loop_, [&](const SeenRequest&) { return Reply{response(200, blob)}; });
  HttpClient client(&loop_);
  Receiver receiver;
  receiver.pause_after_first = true;
  HttpRequest request = download(server, receiver);
  // Less than the pause below (paused time does not count), and long enough for the first
  // piece to arrive on a loaded machine.
  request.timeout = 1s;
  std::optional<HttpResult> result;
  HttpClient::RequestHandle handle =
      client.request(std::move(request), [&](HttpResult r) { result = std::move(r); });
  receiver.handle = &handle;
  ASSERT_TRUE(run_until([&] { return receiver.pieces > 0; }));
  // While paused, the loop turns for longer than the timeout and no more arrives but what
  // was already read off the socket in the same turn.
  const std::size_t paused_at = receiver.body.size();
  bool waited = false;
  Timer wait(&loop_);
  wait.start(2500, [&] { waited = true; });
  ASSERT_TRUE(run_until([&] { return waited; }));
  EXPECT_EQ(receiver.body.size(), paused_at);
  EXPECT_FALSE(result.has_value()) << "timed out while paused";
  handle.resume_reading();
  ASSERT_TRUE(run_until([&] { return result.has_value(); }, 10s));
  ASSERT_TRUE(result->ok()) << result->error_text;
  EXPECT_EQ(receiver.body, blob);
}

// A large body is read in large reads (the socket wakes the loop only once 64 KiB are
// there). A server that then sends less than that within the timeout is slow, not
// silent: the client takes what it has, reads as the bytes come, and the download succeeds.
TEST_F(HttpClientStreamTest, AServerTooSlowForALargeReadIsReadAsItComes) {
  const std::string blob(200 * 1024, 's');
  const std::string whole = response(200, blob);
  const std::size_t first = whole.size() - blob.size() + 100 * 1024;  // 100 KiB still to come
  Reply reply{whole.substr(0, first)};
  // 12 KiB in 3 s, against a 2 s timeout: the large read is not there in time. After the
  // first timeout each piece counts, with 1.5 s to spare.
  for (std::size_t at = first; at < first + 6 * 2048; at += 2048) {
    reply.then.push_back(whole.substr(at, 2048));
  }
  reply.then.push_back(whole.substr(first + 6 * 2048));
  reply.every = 500ms;
  TestServer server(&loop_, [&](const SeenRequest&) { return reply; });
  HttpClient client(&loop_);
  Receiver receiver;
  HttpRequest request = download(server, receiver);
  request.timeout = 2s;
  const HttpResult result = fetch(client, std::move(request));
  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_EQ(receiver.body, blob);
  // The slow path was taken: the trickle waited in the socket (below the large read's
  // watermark) until the silence timer found it, and came up together. Read as it came,
  // each piece would carry one 2 KiB write.
  const std::size_t trickle_begin = 100 * 1024, trickle_end = trickle_begin + 6 * 2048;
  std::size_t most_trickle_in_a_piece = 0, piece_begin = 0;
  for (const std::size_t piece_end : receiver.piece_ends) {
    const std::size_t overlap_begin = std::max(piece_begin, trickle_begin);
    const std::size_t overlap_end = std::min(piece_end, trickle_end);
    if (overlap_end > overlap_begin) {
      most_trickle_in_a_piece = std::max(most_trickle_in_a_piece, overlap_end - overlap_begin);
    }
    piece_begin = piece_end;
  }
  EXPECT_GT(most_trickle_in_a_piece, 2u * 2048) << "the trickle was never held for a large read";
}

// The receiver paused on the body's last piece: the download is complete all the same, and
// the kept-alive connection must read again when reused (it once sat deaf until the next
// request timed out: a TOP after a RETR through a slow POP3 client).
TEST_F(HttpClientStreamTest, AConnectionPausedOnTheLastPieceIsReusedReading) {
  std::vector<std::size_t> connections;
  TestServer server(&loop_, [&](const SeenRequest& seen) {
    connections.push_back(seen.connection);
    return Reply{response(200, "small blob")};
  });
  HttpClient client(&loop_);
  Receiver receiver;
  receiver.pause_after_first = true;
  std::optional<HttpResult> first;
  HttpClient::RequestHandle handle =
      client.request(download(server, receiver), [&](HttpResult r) { first = std::move(r); });
  receiver.handle = &handle;
  ASSERT_TRUE(run_until([&] { return first.has_value(); }));
  ASSERT_TRUE(first->ok()) << first->error_text;
  EXPECT_EQ(receiver.body, "small blob");
  ASSERT_EQ(client.idle_connections(), 1u);

  HttpRequest again = get(server.url("/session"));
  again.timeout = 2s;
  const HttpResult second = fetch(client, std::move(again));
  ASSERT_TRUE(second.ok()) << second.error_text;
  EXPECT_EQ(second.body, "small blob");
  EXPECT_EQ(connections, (std::vector<std::size_t>{0, 0})) << "the kept-alive connection";
}

TEST_F(HttpClientStreamTest, TheReceiverCanStopAndTheConnectionIsNotReused) {
  const std::string blob(1024 * 1024, 's');
  TestServer server(&loop_, [&](const SeenRequest&) { return Reply{response(200, blob)}; });
  HttpClient client(&loop_);
  Receiver receiver;
  receiver.stop_after = 1000;
  const HttpResult result = fetch(client, download(server, receiver));
  EXPECT_EQ(result.error, HttpError::kStopped);
  EXPECT_GE(receiver.body.size(), 1000u);
  EXPECT_LT(receiver.body.size(), blob.size());
  EXPECT_EQ(client.idle_connections(), 0u);
}

TEST_F(HttpClientStreamTest, ACutDownloadIsAnError) {
  TestServer server(&loop_, [](const SeenRequest&) {
    Reply reply{"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + std::string(5000, 'c')};
    reply.close_after = true;
    return reply;
  });
  HttpClient client(&loop_);
  Receiver receiver;
  const HttpResult result = fetch(client, download(server, receiver));
  EXPECT_EQ(result.error, HttpError::kProtocol);
  EXPECT_EQ(receiver.body, std::string(5000, 'c'));
}

}  // namespace
}  // namespace popbridge::proxy
