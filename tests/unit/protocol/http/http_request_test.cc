// SPDX-License-Identifier: Apache-2.0
#include "protocol/http/http_request.h"

#include <gtest/gtest.h>

#include <string>

namespace popbridge::protocol {
namespace {

using Status = HttpRequestParser::Status;

// Feeds the request split at every position (and byte by byte) and checks each way ends
// in the same place.
Status feed_split(HttpRequestParser& parser, std::string_view request, std::size_t split) {
  Status status = parser.feed(request.substr(0, split));
  if (status != Status::kIncomplete) {
    return status;
  }
  return parser.feed(request.substr(split));
}

TEST(HttpRequestParser, SimpleGetAtEverySplit) {
  const std::string request =
      "GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9101\r\nAccept: text/plain\r\n\r\n";
  for (std::size_t split = 0; split <= request.size(); ++split) {
    HttpRequestParser parser;
    ASSERT_EQ(feed_split(parser, request, split), Status::kComplete) << "split " << split;
    EXPECT_EQ(parser.method(), "GET");
    EXPECT_EQ(parser.path(), "/metrics");
    EXPECT_TRUE(parser.keep_alive());
  }
}

TEST(HttpRequestParser, ByteByByte) {
  const std::string request = "GET /readyz HTTP/1.0\r\n\r\n";
  HttpRequestParser parser;
  Status status = Status::kIncomplete;
  for (char c : request) {
    ASSERT_EQ(status, Status::kIncomplete);
    status = parser.feed(std::string_view(&c, 1));
  }
  EXPECT_EQ(status, Status::kComplete);
  EXPECT_EQ(parser.path(), "/readyz");
  EXPECT_FALSE(parser.keep_alive()) << "HTTP/1.0 without keep-alive closes";
}

TEST(HttpRequestParser, PipelinedRequestWaitsForReset) {
  HttpRequestParser parser;
  EXPECT_EQ(parser.feed("GET /healthz HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n"),
            Status::kComplete);
  EXPECT_EQ(parser.path(), "/healthz");
  parser.reset();
  EXPECT_EQ(parser.feed("GET /metrics HTTP/1.1\r\n\r\n"), Status::kComplete);
  EXPECT_EQ(parser.path(), "/metrics");
}

TEST(HttpRequestParser, MalformedRequestsAreErrors) {
  for (std::string_view bad :
       {"GARBAGE\r\n\r\n", "GET / HTTP/9.Z\r\n\r\n", "GET /\x01 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n"}) {
    HttpRequestParser parser;
    EXPECT_EQ(parser.feed(bad), Status::kError) << bad;
    EXPECT_FALSE(parser.error().empty());
  }
}

TEST(HttpRequestParser, OversizedRequestIsRefused) {
  HttpRequestParser parser(64);
  EXPECT_EQ(parser.feed("GET / HTTP/1.1\r\nX-Long: " + std::string(100, 'a')), Status::kError);
  EXPECT_EQ(parser.error(), "request too large");
}

TEST(HttpRequestParser, BodyCountsTowardsTheLimit) {
  HttpRequestParser parser(128);
  EXPECT_EQ(parser.feed("POST /metrics HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"),
            Status::kComplete);
  EXPECT_EQ(parser.method(), "POST");
}

}  // namespace
}  // namespace popbridge::protocol
