// SPDX-License-Identifier: Apache-2.0
#include "protocol/http/http_response.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace popbridge::protocol {
namespace {

using Status = HttpResponseParser::Status;
using Error = HttpResponseParser::Error;

Status feed_split(HttpResponseParser& parser, std::string_view response, std::size_t split) {
  Status status = parser.feed(response.substr(0, split));
  if (status != Status::kIncomplete) {
    return status;
  }
  return parser.feed(response.substr(split));
}

Status feed_bytewise(HttpResponseParser& parser, std::string_view response) {
  Status status = Status::kIncomplete;
  for (char c : response) {
    status = parser.feed(std::string_view(&c, 1));
    if (status != Status::kIncomplete) {
      break;
    }
  }
  return status;
}

// The auth_http hook answer, as nginx expects it, with a repeated field.
const std::string kAuthResponse =
    "HTTP/1.1 200 OK\r\n"
    "Auth-Status: OK\r\n"
    "auth-server: 192.0.2.7  \r\n"
    "Auth-Port: 143\r\n"
    "X-Tag: one\r\n"
    "X-Tag: two\r\n"
    "Content-Length: 5\r\n"
    "\r\n"
    "hello";

void expect_auth_response(const HttpResponseParser& parser) {
  EXPECT_EQ(parser.status_code(), 200);
  EXPECT_EQ(parser.reason(), "OK");
  EXPECT_EQ(parser.header("AUTH-STATUS"), "OK");
  EXPECT_EQ(parser.header("Auth-Server"), "192.0.2.7") << "trailing whitespace is not content";
  EXPECT_EQ(parser.header("auth-port"), "143");
  EXPECT_EQ(parser.header_values("x-tag"), (std::vector<std::string_view>{"one", "two"}));
  EXPECT_EQ(parser.header("Auth-Wait"), std::nullopt);
  EXPECT_EQ(parser.headers().size(), 6u);
  EXPECT_EQ(parser.body(), "hello");
  EXPECT_TRUE(parser.keep_alive());
  EXPECT_EQ(parser.trailing_bytes(), 0u);
}

TEST(HttpResponseParser, ContentLengthAtEverySplit) {
  for (std::size_t split = 0; split <= kAuthResponse.size(); ++split) {
    HttpResponseParser parser;
    ASSERT_EQ(feed_split(parser, kAuthResponse, split), Status::kComplete) << "split " << split;
    expect_auth_response(parser);
  }
}

TEST(HttpResponseParser, ContentLengthByteByByte) {
  HttpResponseParser parser;
  ASSERT_EQ(feed_bytewise(parser, kAuthResponse), Status::kComplete);
  expect_auth_response(parser);
}

TEST(HttpResponseParser, EverySplitIntoThreePieces) {
  const std::string response =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
  for (std::size_t a = 0; a <= response.size(); ++a) {
    for (std::size_t b = a; b <= response.size(); ++b) {
      HttpResponseParser parser;
      parser.feed(std::string_view(response).substr(0, a));
      parser.feed(std::string_view(response).substr(a, b - a));
      ASSERT_EQ(parser.feed(std::string_view(response).substr(b)), Status::kComplete)
          << a << "," << b;
      ASSERT_EQ(parser.body(), "abc");
    }
  }
}

TEST(HttpResponseParser, ChunkedWithExtensionsAndTrailers) {
  const std::string response =
      "HTTP/1.1 200 OK\r\n"
      "Content-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n"
      "\r\n"
      "7;ext=1\r\n{\"a\":1,\r\n"
      "A\r\n\"b\":\"xyz\"}\r\n"
      "0\r\n"
      "X-Trailer: ignored\r\n"
      "\r\n";
  for (std::size_t split = 0; split <= response.size(); ++split) {
    HttpResponseParser parser;
    ASSERT_EQ(feed_split(parser, response, split), Status::kComplete) << "split " << split;
    EXPECT_EQ(parser.body(), "{\"a\":1,\"b\":\"xyz\"}");
    EXPECT_EQ(parser.header("content-type"), "application/json");
    EXPECT_EQ(parser.header("X-Trailer"), std::nullopt) << "trailers are not headers";
    EXPECT_TRUE(parser.keep_alive());
  }
  HttpResponseParser parser;
  EXPECT_EQ(feed_bytewise(parser, response), Status::kComplete);
  EXPECT_EQ(parser.body(), "{\"a\":1,\"b\":\"xyz\"}");
}

TEST(HttpResponseParser, BodyUntilEof) {
  const std::string response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
  for (std::size_t split = 0; split <= response.size(); ++split) {
    HttpResponseParser parser;
    ASSERT_EQ(feed_split(parser, response, split), Status::kIncomplete);
    ASSERT_EQ(parser.finish_eof(), Status::kComplete) << "split " << split;
    EXPECT_EQ(parser.body(), "all of it");
    EXPECT_FALSE(parser.keep_alive()) << "the body was framed by the close";
  }
}

TEST(HttpResponseParser, KeepAliveRules) {
  struct Case {
    const char* response;
    bool keep_alive;
  };
  const Case cases[] = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true},
      {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false},
      {"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false},
      {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", true},
      {"HTTP/1.1 204 No Content\r\n\r\n", true},
      {"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", true},
  };
  for (const Case& c : cases) {
    HttpResponseParser parser;
    ASSERT_EQ(parser.feed(c.response), Status::kComplete) << c.response;
    EXPECT_EQ(parser.keep_alive(), c.keep_alive) << c.response;
    EXPECT_TRUE(parser.body().empty());
  }
}

TEST(HttpResponseParser, HeadResponseHasNoBody) {
  HttpResponseParser parser;
  parser.expect_no_body();
  ASSERT_EQ(parser.feed("HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"), Status::kComplete);
  EXPECT_TRUE(parser.body().empty());
  EXPECT_TRUE(parser.keep_alive());
}

// body_left() promises octets the server will send without being asked: fed a byte at a
// time, it never promises more than is left of the response, whatever the framing.
TEST(HttpResponseParser, BodyLeftNeverPromisesMoreThanFollows) {
  const std::string body(70000, 'b');
  const struct {
    const char* name;
    std::string response;
    bool no_body;
  } cases[] = {
      {"length", "HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + body, false},
      {"chunked",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
       "1117;ext=1\r\n" +
           body.substr(0, 0x1117) + "\r\n" + "a\r\n0123456789\r\n0\r\nX: y\r\n\r\n",
       false},
      {"length in the trailer",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
       "Content-Length: 1000000\r\n\r\n",
       false},
      {"head", "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", true},
      {"not modified", "HTTP/1.1 304 Not Modified\r\nContent-Length: 99999999\r\n\r\n", false},
      {"interim", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
       false},
      {"until eof", "HTTP/1.0 200 OK\r\n\r\n" + body, false},
  };
  for (const auto& c : cases) {
    HttpResponseParser parser;
    if (c.no_body) {
      parser.expect_no_body();
    }
    std::uint64_t most = 0;
    for (std::size_t fed = 0; fed < c.response.size(); ++fed) {
      parser.feed(std::string_view(c.response).substr(fed, 1));
      const std::uint64_t left = c.response.size() - fed - 1;
      ASSERT_LE(parser.body_left(), left) << c.name << " after " << fed + 1 << " octets";
      most = std::max(most, parser.body_left());
    }
    EXPECT_EQ(parser.body_left(), 0u) << c.name;
    if (std::string_view(c.name) != "until eof") {
      EXPECT_EQ(parser.status(), Status::kComplete) << c.name << ": " << parser.error_text();
    }
    if (std::string_view(c.name) == "length") {
      EXPECT_EQ(most, body.size()) << "the whole body is announced once the headers are read";
    }
    if (std::string_view(c.name) == "chunked") {
      EXPECT_EQ(most, 0x1117u) << "a chunk is announced by its size line";
    }
  }
}

TEST(HttpResponseParser, InterimResponsesAreSkipped) {
  const std::string response =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
      "HTTP/1.1 401 Unauthorized\r\nAuth-Status: Invalid login\r\nContent-Length: 2\r\n\r\nno";
  for (std::size_t split = 0; split <= response.size(); ++split) {
    HttpResponseParser parser;
    ASSERT_EQ(feed_split(parser, response, split), Status::kComplete) << "split " << split;
    EXPECT_EQ(parser.status_code(), 401);
    EXPECT_EQ(parser.reason(), "Unauthorized");
    EXPECT_EQ(parser.header("Link"), std::nullopt) << "fields of the 103 are gone";
    EXPECT_EQ(parser.header("Auth-Status"), "Invalid login");
    EXPECT_EQ(parser.body(), "no");
  }
}

TEST(HttpResponseParser, SwitchingProtocolsIsAnError) {
  HttpResponseParser parser;
  EXPECT_EQ(parser.feed("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                        "Upgrade: websocket\r\n\r\n"),
            Status::kError);
  EXPECT_EQ(parser.error(), Error::kMalformed);
}

TEST(HttpResponseParser, BytesAfterTheResponseAreCounted) {
  HttpResponseParser parser;
  ASSERT_EQ(parser.feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabEXTRA"), Status::kComplete);
  EXPECT_EQ(parser.body(), "ab");
  EXPECT_EQ(parser.trailing_bytes(), 5u);
  EXPECT_EQ(parser.feed("more"), Status::kComplete) << "ignored until reset()";
  EXPECT_EQ(parser.body(), "ab");
}

TEST(HttpResponseParser, ResetReadsTheNextResponseOnTheConnection) {
  HttpResponseParser parser;
  ASSERT_EQ(parser.feed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"), Status::kComplete);
  parser.reset();
  EXPECT_FALSE(parser.started());
  ASSERT_EQ(parser.feed("HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nb"), Status::kComplete);
  EXPECT_EQ(parser.status_code(), 404);
  EXPECT_EQ(parser.body(), "b");
  EXPECT_EQ(parser.headers().size(), 1u);
}

TEST(HttpResponseParser, TakeMovesHeadersAndBodyOut) {
  HttpResponseParser parser;
  ASSERT_EQ(parser.feed(kAuthResponse), Status::kComplete);
  EXPECT_EQ(parser.take_body(), "hello");
  std::vector<HttpHeader> headers = parser.take_headers();
  EXPECT_EQ(find_header(headers, "auth-status"), "OK");
  EXPECT_EQ(find_headers(headers, "X-TAG").size(), 2u);
}

TEST(HttpResponseParser, HeaderLimitIsExactAtEverySplit) {
  const std::string response = "HTTP/1.1 200 OK\r\nX-Pad: " + std::string(40, 'p') + "\r\n\r\n";
  {
    HttpResponseLimits limits;
    limits.max_header_bytes = response.size();
    for (std::size_t split = 0; split <= response.size(); ++split) {
      HttpResponseParser parser(limits);
      EXPECT_EQ(feed_split(parser, response, split), Status::kIncomplete)
          << "headers of exactly the limit are fine (body framed by EOF)";
      EXPECT_EQ(parser.finish_eof(), Status::kComplete);
    }
  }
  HttpResponseLimits limits;
  limits.max_header_bytes = response.size() - 1;
  for (std::size_t split = 0; split <= response.size(); ++split) {
    HttpResponseParser parser(limits);
    EXPECT_EQ(feed_split(parser, response, split), Status::kError) << "split " << split;
    EXPECT_EQ(parser.error(), Error::kHeadersTooLarge);
  }
  HttpResponseParser parser(limits);
  EXPECT_EQ(feed_bytewise(parser, response), Status::kError);
  EXPECT_EQ(parser.error(), Error::kHeadersTooLarge);
}

TEST(HttpResponseParser, EndlessHeadersStopAtTheLimit) {
  HttpResponseParser parser;  // 16 KiB by default
  ASSERT_EQ(parser.feed("HTTP/1.1 200 OK\r\n"), Status::kIncomplete);
  Status status = Status::kIncomplete;
  int fed = 0;
  while (status == Status::kIncomplete && fed < 10000) {
    status = parser.feed("X-Flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    ++fed;
  }
  EXPECT_EQ(status, Status::kError);
  EXPECT_EQ(parser.error(), Error::kHeadersTooLarge);
  EXPECT_LT(fed, 400);
  EXPECT_LE(parser.headers().size(), 16u * 1024 / 50);
}

TEST(HttpResponseParser, InterimResponsesCountTowardsTheHeaderLimit) {
  HttpResponseLimits limits;
  limits.max_header_bytes = 100;
  HttpResponseParser parser(limits);
  Status status = Status::kIncomplete;
  for (int i = 0; i < 20 && status == Status::kIncomplete; ++i) {
    status = parser.feed("HTTP/1.1 100 Continue\r\n\r\n");
  }
  EXPECT_EQ(status, Status::kError);
  EXPECT_EQ(parser.error(), Error::kHeadersTooLarge);
}

TEST(HttpResponseParser, BodyLimit) {
  HttpResponseLimits limits;
  limits.max_body_bytes = 4;
  struct Case {
    std::string response;
    bool eof;  // framed by the end of the connection
    Status expected;
  };
  const std::vector<Case> cases = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd", false, Status::kComplete},
      // Refused from the header alone: not a byte of the body is needed.
      {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, Status::kError},
      {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n", false, Status::kError},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n",
       false, Status::kComplete},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n",
       false, Status::kError},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\nab", false,
       Status::kError},
      {"HTTP/1.1 200 OK\r\n\r\nabcd", true, Status::kComplete},
      {"HTTP/1.1 200 OK\r\n\r\nabcde", true, Status::kError},
  };
  for (const Case& c : cases) {
    for (std::size_t split = 0; split <= c.response.size(); ++split) {
      HttpResponseParser parser(limits);
      Status status = feed_split(parser, c.response, split);
      if (c.eof && status == Status::kIncomplete) {
        status = parser.finish_eof();
      }
      ASSERT_EQ(status, c.expected) << c.response << " split " << split;
      if (c.expected == Status::kError) {
        EXPECT_EQ(parser.error(), Error::kBodyTooLarge) << c.response;
      }
      EXPECT_LE(parser.body().size(), 4u);
    }
  }
}

TEST(HttpResponseParser, TruncatedResponses) {
  const std::string response =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
  for (std::size_t cut = 0; cut < response.size(); ++cut) {
    HttpResponseParser parser;
    ASSERT_EQ(parser.feed(std::string_view(response).substr(0, cut)), Status::kIncomplete);
    EXPECT_EQ(parser.finish_eof(), Status::kError) << "cut at " << cut;
    EXPECT_EQ(parser.error(), Error::kTruncated);
    EXPECT_FALSE(parser.error_text().empty());
  }
  HttpResponseParser parser;
  ASSERT_EQ(parser.feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), Status::kIncomplete);
  EXPECT_EQ(parser.finish_eof(), Status::kError);
  EXPECT_EQ(parser.error(), Error::kTruncated);
}

TEST(HttpResponseParser, EofAfterCompleteResponseChangesNothing) {
  HttpResponseParser parser;
  ASSERT_EQ(parser.feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Status::kComplete);
  EXPECT_EQ(parser.finish_eof(), Status::kComplete);
}

TEST(HttpResponseParser, MalformedResponses) {
  const std::vector<std::string> bad = {
      "GARBAGE\r\n\r\n",
      "HTTP/1.1 abc OK\r\n\r\n",
      "HTTP/1.1 002 Odd\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
      "HTTP/9.Z 200 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX-Bad\x01: v\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
      "GET / HTTP/1.1\r\n\r\n",
  };
  for (const std::string& response : bad) {
    HttpResponseParser whole;
    EXPECT_EQ(whole.feed(response), Status::kError) << response;
    EXPECT_EQ(whole.error(), Error::kMalformed) << response;
    EXPECT_FALSE(whole.error_text().empty());
    HttpResponseParser bytewise;
    EXPECT_EQ(feed_bytewise(bytewise, response), Status::kError) << response;
  }
}

TEST(HttpResponseParser, HeaderHelpers) {
  std::vector<HttpHeader> headers = {{"Set-Cookie", "a=1"}, {"X", "y"}, {"set-cookie", "b=2"}};
  EXPECT_TRUE(header_name_equals("Content-Length", "content-LENGTH"));
  EXPECT_FALSE(header_name_equals("Content-Length", "Content-Lengt"));
  EXPECT_EQ(find_header(headers, "SET-COOKIE"), "a=1");
  EXPECT_EQ(find_headers(headers, "set-cookie"), (std::vector<std::string_view>{"a=1", "b=2"}));
  EXPECT_TRUE(find_headers(headers, "none").empty());
}

// Collects what a streaming parser hands over, and can refuse the body or stop early.
class Collector final : public HttpBodyReceiver {
 public:
  bool on_response_head(int status, const std::vector<HttpHeader>& headers) override {
    statuses.push_back(status);
    length = find_header(headers, "content-length").value_or("");
    return status == 200;
  }
  bool on_body_data(std::string_view data) override {
    ++pieces;
    body.append(data);
    return body.size() < stop_after;
  }
  std::vector<int> statuses;
  std::string length;
  std::string body;
  std::size_t pieces = 0;
  std::size_t stop_after = SIZE_MAX;
};

TEST(HttpResponseParser, StreamsABodyPastTheLimitAtEverySplit) {
  const std::string blob(3000, 'x');
  const std::string response =
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + blob;
  for (std::size_t split = 0; split <= response.size(); split += 97) {
    HttpResponseParser parser(HttpResponseLimits{1024, 100});
    Collector collector;
    parser.stream_body_to(&collector);
    ASSERT_EQ(feed_split(parser, response, split), Status::kComplete) << split;
    EXPECT_TRUE(parser.streaming());
    EXPECT_EQ(collector.statuses, std::vector<int>{200});  // the interim one is not offered
    EXPECT_EQ(collector.length, "3000");
    EXPECT_EQ(collector.body, blob);
    EXPECT_TRUE(parser.body().empty());
  }
  HttpResponseParser chunked(HttpResponseLimits{1024, 10});
  Collector collector;
  chunked.stream_body_to(&collector);
  EXPECT_EQ(feed_bytewise(chunked,
                          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "10\r\n0123456789abcdef\r\n3\r\nxyz\r\n0\r\n\r\n"),
            Status::kComplete);
  EXPECT_EQ(collector.body, "0123456789abcdefxyz");
  EXPECT_EQ(collector.pieces, 19u);  // byte by byte: no copy held back
}

TEST(HttpResponseParser, ARefusedBodyIsCollectedWithinTheLimit) {
  HttpResponseParser parser(HttpResponseLimits{1024, 8});
  Collector collector;
  parser.stream_body_to(&collector);
  EXPECT_EQ(parser.feed("HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!"),
            Status::kComplete);
  EXPECT_FALSE(parser.streaming());
  EXPECT_EQ(parser.body(), "nope!");
  EXPECT_TRUE(collector.body.empty());
  HttpResponseParser big(HttpResponseLimits{1024, 8});
  big.stream_body_to(&collector);
  EXPECT_EQ(big.feed("HTTP/1.1 500 Oops\r\nContent-Length: 9\r\n\r\n"), Status::kError);
  EXPECT_EQ(big.error(), Error::kBodyTooLarge);
}

TEST(HttpResponseParser, TheReceiverCanStopAndATruncatedStreamIsAnError) {
  HttpResponseParser parser;
  Collector collector;
  collector.stop_after = 4;
  parser.stream_body_to(&collector);
  EXPECT_EQ(feed_bytewise(parser, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"),
            Status::kError);
  EXPECT_EQ(parser.error(), Error::kStopped);
  EXPECT_EQ(collector.body, "0123");

  HttpResponseParser cut;
  Collector partial;
  cut.stream_body_to(&partial);
  EXPECT_EQ(cut.feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234"), Status::kIncomplete);
  EXPECT_EQ(cut.finish_eof(), Status::kError);
  EXPECT_EQ(cut.error(), Error::kTruncated);
  EXPECT_EQ(partial.body, "01234");
}

}  // namespace
}  // namespace popbridge::protocol
