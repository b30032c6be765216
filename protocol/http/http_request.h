// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace popbridge::protocol {

// Reads one HTTP/1.1 request (the admin endpoint: GET /metrics, /healthz, /readyz) with
// Node's http-parser, and caps what a client can make us hold: the request line and
// headers together, and any body, are limited to max_bytes. Parsing stops at the end of
// a request; the caller feeds what followed after reset().
class HttpRequestParser {
 public:
  enum class Status { kIncomplete, kComplete, kError };

  explicit HttpRequestParser(std::size_t max_bytes = 8192);
  HttpRequestParser(const HttpRequestParser&) = delete;
  HttpRequestParser& operator=(const HttpRequestParser&) = delete;

  // consumed, if given, says how many bytes the request took: after kComplete the rest
  // belongs to the next (pipelined) request, to be fed after reset().
  Status feed(std::string_view bytes, std::size_t* consumed = nullptr);
  void reset();

  // Valid once kComplete.
  std::string_view method() const { return method_; }
  // The path without the query string.
  std::string_view path() const;
  bool keep_alive() const { return keep_alive_; }
  // Why the request was rejected, once kError.
  std::string_view error() const { return error_; }

 private:
  static int on_url(http_parser* parser, const char* at, std::size_t length);
  static int on_headers_complete(http_parser* parser);
  static int on_body(http_parser* parser, const char* at, std::size_t length);
  static int on_message_complete(http_parser* parser);

  http_parser parser_{};
  http_parser_settings settings_{};
  std::size_t max_bytes_;
  std::size_t seen_ = 0;
  Status status_ = Status::kIncomplete;
  std::string method_;
  std::string target_;
  bool keep_alive_ = false;
  std::string error_;
};

}  // namespace popbridge::protocol
