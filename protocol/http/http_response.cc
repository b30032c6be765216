// SPDX-License-Identifier: Apache-2.0
#include "protocol/http/http_response.h"

#include <climits>

#include "protocol/common/ascii.h"

namespace popbridge::protocol {
namespace {

void trim_trailing_whitespace(std::string& value) {
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
    value.pop_back();
  }
}

}  // namespace

bool header_name_equals(std::string_view a, std::string_view b) {
  return equals_ignoring_ascii_case(a, b);
}

std::optional<std::string_view> find_header(const std::vector<HttpHeader>& headers,
                                            std::string_view name) {
  for (const HttpHeader& header : headers) {
    if (header_name_equals(header.name, name)) {
      return std::string_view(header.value);
    }
  }
  return std::nullopt;
}

std::vector<std::string_view> find_headers(const std::vector<HttpHeader>& headers,
                                           std::string_view name) {
  std::vector<std::string_view> values;
  for (const HttpHeader& header : headers) {
    if (header_name_equals(header.name, name)) {
      values.emplace_back(header.value);
    }
  }
  return values;
}

HttpResponseParser::HttpResponseParser(HttpResponseLimits limits) : limits_(limits) {
  http_parser_settings_init(&settings_);
  settings_.on_status = &HttpResponseParser::on_status;
  settings_.on_header_field = &HttpResponseParser::on_header_field;
  settings_.on_header_value = &HttpResponseParser::on_header_value;
  settings_.on_headers_complete = &HttpResponseParser::on_headers_complete;
  settings_.on_body = &HttpResponseParser::on_body;
  settings_.on_chunk_header = &HttpResponseParser::on_chunk_header;
  settings_.on_message_complete = &HttpResponseParser::on_message_complete;
  reset();
}

void HttpResponseParser::reset() {
  http_parser_init(&parser_, HTTP_RESPONSE);
  parser_.data = this;
  status_ = Status::kIncomplete;
  error_ = Error::kNone;
  error_text_.clear();
  header_bytes_ = 0;
  interim_done_ = false;
  no_body_ = false;
  streaming_ = false;
  started_ = false;
  keep_alive_ = false;
  trailing_bytes_ = 0;
  clear_message();
  body_.clear();
}

void HttpResponseParser::clear_message() {
  headers_done_ = false;
  last_was_field_ = false;
  status_code_ = 0;
  reason_.clear();
  headers_.clear();
}

void HttpResponseParser::fail(Error error, std::string text) {
  if (status_ != Status::kIncomplete) {
    return;
  }
  status_ = Status::kError;
  error_ = error;
  error_text_ = std::move(text);
}

HttpResponseParser::Status HttpResponseParser::feed(std::string_view bytes) {
  if (status_ != Status::kIncomplete || bytes.empty()) {
    return status_;
  }
  started_ = true;
  while (!bytes.empty() && status_ == Status::kIncomplete) {
    // While the headers are incomplete the parser sees only what is left of their
    // budget, so the cap is exact whatever the split.
    std::string_view slice = bytes;
    const bool in_headers = !headers_done_;
    if (in_headers) {
      const std::size_t budget = limits_.max_header_bytes - header_bytes_;
      if (budget == 0) {
        fail(Error::kHeadersTooLarge, "response headers too large");
        break;
      }
      slice = bytes.substr(0, budget);
    }
    const std::size_t parsed =
        http_parser_execute(&parser_, &settings_, slice.data(), slice.size());
    if (in_headers) {
      header_bytes_ += parsed;
    }
    bytes.remove_prefix(parsed);
    if (status_ != Status::kIncomplete) {
      break;  // complete (paused), or failed inside a callback
    }
    if (interim_done_) {
      interim_done_ = false;
      http_parser_pause(&parser_, 0);
      clear_message();
      continue;
    }
    const http_errno code = HTTP_PARSER_ERRNO(&parser_);
    if (code != HPE_OK) {
      fail(Error::kMalformed, http_errno_description(code));
    } else if (parsed != slice.size()) {
      fail(Error::kMalformed, "response parsing stopped early");
    }
  }
  if (status_ == Status::kComplete) {
    trailing_bytes_ = bytes.size();
  }
  return status_;
}

HttpResponseParser::Status HttpResponseParser::finish_eof() {
  if (status_ != Status::kIncomplete) {
    return status_;
  }
  if (started_) {
    // A length of zero tells http-parser the stream ended: it completes a body that
    // runs until EOF and flags every other unfinished state.
    http_parser_execute(&parser_, &settings_, nullptr, 0);
  }
  if (status_ == Status::kIncomplete) {
    fail(Error::kTruncated, started_ ? "connection closed before the response was complete"
                                     : "connection closed before a response");
  }
  return status_;
}

int HttpResponseParser::on_status(http_parser* parser, const char* at, std::size_t length) {
  static_cast<HttpResponseParser*>(parser->data)->reason_.append(at, length);
  return 0;
}

int HttpResponseParser::on_header_field(http_parser* parser, const char* at, std::size_t length) {
  auto* self = static_cast<HttpResponseParser*>(parser->data);
  if (self->headers_done_) {
    return 0;  // trailer fields after a chunked body: nothing here needs them
  }
  if (!self->last_was_field_) {
    self->headers_.emplace_back();
    self->last_was_field_ = true;
  }
  self->headers_.back().name.append(at, length);
  return 0;
}

int HttpResponseParser::on_header_value(http_parser* parser, const char* at, std::size_t length) {
  auto* self = static_cast<HttpResponseParser*>(parser->data);
  if (self->headers_done_ || self->headers_.empty()) {
    return 0;
  }
  self->last_was_field_ = false;
  self->headers_.back().value.append(at, length);
  return 0;
}

int HttpResponseParser::on_headers_complete(http_parser* parser) {
  auto* self = static_cast<HttpResponseParser*>(parser->data);
  self->headers_done_ = true;
  self->status_code_ = static_cast<int>(parser->status_code);
  for (HttpHeader& header : self->headers_) {
    trim_trailing_whitespace(header.value);
  }
  if (self->status_code_ < 100 || self->status_code_ > 599) {
    // http-parser takes any three digits; RFC 9110 section 15 defines 100-599 only.
    self->fail(Error::kMalformed, "invalid status code");
    return -1;
  }
  if (self->status_code_ == 101) {
    // We never ask for an upgrade; what follows would not be HTTP.
    self->fail(Error::kMalformed, "unexpected 101 Switching Protocols");
    return -1;
  }
  // RFC 9112 section 6.3: these never have a body, whatever Content-Length says
  // (http-parser would wait for one after a 304 that repeats the length).
  const bool no_body = self->no_body_ || self->status_code_ / 100 == 1 ||
                       self->status_code_ == 204 || self->status_code_ == 304;
  if (self->receiver_ != nullptr && !no_body && self->status_code_ / 100 != 1) {
    self->streaming_ = self->receiver_->on_response_head(self->status_code_, self->headers_);
    if (self->status_ != Status::kIncomplete) {
      return -1;
    }
  }
  if ((parser->flags & F_CONTENTLENGTH) != 0 && !no_body && !self->streaming_ &&
      parser->content_length > self->limits_.max_body_bytes) {
    // Refused before a byte of it is buffered.
    self->fail(Error::kBodyTooLarge, "response body too large");
    return -1;
  }
  self->keep_alive_ = http_should_keep_alive(parser) != 0;
  return no_body ? 1 : 0;  // 1: no body follows
}

int HttpResponseParser::on_chunk_header(http_parser* parser) {
  auto* self = static_cast<HttpResponseParser*>(parser->data);
  // http-parser puts the announced chunk size here; refuse it before reading it.
  if (!self->streaming_ &&
      parser->content_length > self->limits_.max_body_bytes - self->body_.size()) {
    self->fail(Error::kBodyTooLarge, "response body too large");
    return -1;
  }
  return 0;
}

int HttpResponseParser::on_body(http_parser* parser, const char* at, std::size_t length) {
  auto* self = static_cast<HttpResponseParser*>(parser->data);
  if (self->streaming_) {
    if (!self->receiver_->on_body_data(std::string_view(at, length))) {
      self->fail(Error::kStopped, "the body's receiver stopped reading");
      return -1;
    }
    return 0;
  }
  if (length > self->limits_.max_body_bytes - self->body_.size()) {
    self->fail(Error::kBodyTooLarge, "response body too large");
    return -1;
  }
  self->body_.append(at, length);
  return 0;
}

std::uint64_t HttpResponseParser::body_left() const {
  // http-parser counts the rest of the body (or chunk) down in content_length, and keeps
  // ULLONG_MAX there when no length was announced. While a chunk's size is being read it
  // holds the digits read so far: never more than the chunk. In the trailer after the
  // last chunk it holds whatever a Content-Length field there says: nothing that follows.
  if (status_ != Status::kIncomplete || !headers_done_ || (parser_.flags & F_TRAILING) != 0 ||
      parser_.content_length == ULLONG_MAX) {
    return 0;
  }
  return parser_.content_length;
}

int HttpResponseParser::on_message_complete(http_parser* parser) {
  auto* self = static_cast<HttpResponseParser*>(parser->data);
  if (self->status_code_ / 100 == 1) {
    // An interim response (100 Continue, 103 Early Hints): the real one follows.
    // Pausing hands control back to feed(), which clears it and carries on.
    self->interim_done_ = true;
  } else {
    self->status_ = Status::kComplete;
  }
  // Stop here: bytes after the response are not parsed as another one.
  http_parser_pause(parser, 1);
  return 0;
}

}  // namespace popbridge::protocol
