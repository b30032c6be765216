// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popbridge::protocol {

struct HttpHeader {
  std::string name;
  std::string value;
};

// ASCII case-insensitive, as HTTP field names are compared.
bool header_name_equals(std::string_view a, std::string_view b);
// The first value of the field called name, if any.
std::optional<std::string_view> find_header(const std::vector<HttpHeader>& headers,
                                            std::string_view name);
// Every value of the field called name, in the order received (fields may repeat).
std::vector<std::string_view> find_headers(const std::vector<HttpHeader>& headers,
                                           std::string_view name);

// Takes a response body piece by piece instead of the parser collecting it (a mail
// download: any size, streamed with backpressure).
class HttpBodyReceiver {
 public:
  virtual ~HttpBodyReceiver() = default;
  // The final response's status and headers are in. True: the body goes to
  // on_body_data, without the body limit; false: it is collected as usual (an error
  // page, say).
  virtual bool on_response_head(int status, const std::vector<HttpHeader>& headers) = 0;
  // The next piece, in order. False stops the parser at once (Error::kStopped).
  virtual bool on_body_data(std::string_view data) = 0;
};

struct HttpResponseLimits {
  // The status line and the header fields, interim (1xx) responses included.
  std::size_t max_header_bytes = 16 * 1024;
  // The decoded body (chunk framing not counted).
  std::size_t max_body_bytes = 1024 * 1024;
};

// Reads one HTTP/1.1 response, as a client receives it, with Node's http-parser. Bytes
// may arrive split anywhere. The body is framed by Content-Length, chunked transfer
// coding, or the end of the connection (call finish_eof() when the peer closes); interim
// 1xx responses are skipped. Memory is bounded by the limits: a response that would pass
// them is an error, never a growing buffer.
//
// Once kComplete or kError the parser ignores further bytes until reset(); bytes that
// followed the complete response in the same feed() are counted in trailing_bytes()
// (a server that sends more than one response per request cannot be trusted with a
// kept-alive connection).
class HttpResponseParser {
 public:
  enum class Status { kIncomplete, kComplete, kError };
  enum class Error {
    kNone,
    kMalformed,        // not HTTP, or an unexpected 101 Switching Protocols
    kHeadersTooLarge,  // past max_header_bytes
    kBodyTooLarge,     // past max_body_bytes (or a Content-Length announcing that)
    kTruncated,        // the connection ended before the response did
    kStopped,          // the body receiver asked to stop
  };

  HttpResponseParser() : HttpResponseParser(HttpResponseLimits{}) {}
  explicit HttpResponseParser(HttpResponseLimits limits);
  HttpResponseParser(const HttpResponseParser&) = delete;
  HttpResponseParser& operator=(const HttpResponseParser&) = delete;

  Status feed(std::string_view bytes);
  // The peer closed the connection: completes a body read until EOF, else kError
  // (kTruncated) unless the response was already complete.
  Status finish_eof();
  // Ready for the next response on the same connection; the limits stay.
  void reset();
  // The response answers a HEAD request: no body follows, whatever the headers say.
  // Call before feeding it.
  void expect_no_body() { no_body_ = true; }
  // The next response's body goes to receiver, if it accepts it (see HttpBodyReceiver);
  // call before feeding it. Null: collected. reset() keeps the receiver.
  void stream_body_to(HttpBodyReceiver* receiver) { receiver_ = receiver; }
  // The body went to the receiver rather than into body().
  bool streaming() const { return streaming_; }

  Status status() const { return status_; }
  // True once any byte of a response was fed (a kept-alive connection that dies before
  // that may be retried).
  bool started() const { return started_; }

  // Valid once kComplete (and partially while incomplete).
  int status_code() const { return status_code_; }
  std::string_view reason() const { return reason_; }
  const std::vector<HttpHeader>& headers() const { return headers_; }
  std::optional<std::string_view> header(std::string_view name) const {
    return find_header(headers_, name);
  }
  std::vector<std::string_view> header_values(std::string_view name) const {
    return find_headers(headers_, name);
  }
  const std::string& body() const { return body_; }
  std::vector<HttpHeader> take_headers() { return std::move(headers_); }
  std::string take_body() { return std::move(body_); }
  // The connection may carry another request: HTTP/1.1 without "Connection: close", or
  // HTTP/1.0 with "Connection: keep-alive", and the body was not framed by EOF.
  bool keep_alive() const { return keep_alive_; }
  std::size_t trailing_bytes() const { return trailing_bytes_; }

  // Body octets the framing has announced that are not parsed yet: the rest of a
  // Content-Length body or of the current chunk. 0 while the headers are incomplete, in a
  // chunked body's trailer, for a body that runs to the connection's end, and once the
  // response is complete. The server sends them without waiting for anything (what
  // Connection::expect_bytes needs).
  std::uint64_t body_left() const;

  Error error() const { return error_; }
  // Why, once kError.
  std::string_view error_text() const { return error_text_; }

 private:
  static int on_status(http_parser* parser, const char* at, std::size_t length);
  static int on_header_field(http_parser* parser, const char* at, std::size_t length);
  static int on_header_value(http_parser* parser, const char* at, std::size_t length);
  static int on_headers_complete(http_parser* parser);
  static int on_body(http_parser* parser, const char* at, std::size_t length);
  static int on_chunk_header(http_parser* parser);
  static int on_message_complete(http_parser* parser);

  Status execute(std::string_view bytes);
  void fail(Error error, std::string text);
  void clear_message();

  http_parser parser_{};
  http_parser_settings settings_{};
  HttpResponseLimits limits_;
  Status status_ = Status::kIncomplete;
  Error error_ = Error::kNone;
  std::string error_text_;

  std::size_t header_bytes_ = 0;  // fed while the headers were not complete
  bool headers_done_ = false;
  bool interim_done_ = false;  // a 1xx ended; the parser is paused before the next one
  bool no_body_ = false;
  HttpBodyReceiver* receiver_ = nullptr;
  bool streaming_ = false;
  bool started_ = false;
  bool last_was_field_ = false;  // a field name may arrive in several pieces

  int status_code_ = 0;
  std::string reason_;
  std::vector<HttpHeader> headers_;
  std::string body_;
  bool keep_alive_ = false;
  std::size_t trailing_bytes_ = 0;
};

}  // namespace popbridge::protocol
