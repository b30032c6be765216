// SPDX-License-Identifier: Apache-2.0
#include "protocol/http/http_request.h"

namespace popbridge::protocol {

HttpRequestParser::HttpRequestParser(std::size_t max_bytes) : max_bytes_(max_bytes) {
  http_parser_settings_init(&settings_);
  settings_.on_url = &HttpRequestParser::on_url;
  settings_.on_headers_complete = &HttpRequestParser::on_headers_complete;
  settings_.on_body = &HttpRequestParser::on_body;
  settings_.on_message_complete = &HttpRequestParser::on_message_complete;
  reset();
}

void HttpRequestParser::reset() {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
  seen_ = 0;
  status_ = Status::kIncomplete;
  method_.clear();
  target_.clear();
  keep_alive_ = false;
  error_.clear();
}

HttpRequestParser::Status HttpRequestParser::feed(std::string_view bytes, std::size_t* consumed) {
  if (consumed != nullptr) {
    *consumed = 0;
  }
  if (status_ != Status::kIncomplete) {
    return status_;
  }
  const std::size_t parsed = http_parser_execute(&parser_, &settings_, bytes.data(), bytes.size());
  if (consumed != nullptr) {
    *consumed = parsed;
  }
  seen_ += parsed;
  if (seen_ > max_bytes_) {
    status_ = Status::kError;
    error_ = "request too large";
    return status_;
  }
  if (status_ == Status::kComplete) {
    return status_;
  }
  if (HTTP_PARSER_ERRNO(&parser_) != HPE_OK || parsed != bytes.size()) {
    status_ = Status::kError;
    error_ = http_errno_description(HTTP_PARSER_ERRNO(&parser_));
  }
  return status_;
}

std::string_view HttpRequestParser::path() const {
  std::string_view target = target_;
  return target.substr(0, target.find('?'));
}

int HttpRequestParser::on_url(http_parser* parser, const char* at, std::size_t length) {
  static_cast<HttpRequestParser*>(parser->data)->target_.append(at, length);
  return 0;
}

int HttpRequestParser::on_headers_complete(http_parser* parser) {
  auto* self = static_cast<HttpRequestParser*>(parser->data);
  self->method_ = http_method_str(static_cast<http_method>(parser->method));
  self->keep_alive_ = http_should_keep_alive(parser) != 0;
  return 0;
}

int HttpRequestParser::on_body(http_parser*, const char*, std::size_t) {
  return 0;  // the endpoints take no body; its size is capped by max_bytes
}

int HttpRequestParser::on_message_complete(http_parser* parser) {
  auto* self = static_cast<HttpRequestParser*>(parser->data);
  self->status_ = Status::kComplete;
  // Stop here: a pipelined second request waits for reset().
  http_parser_pause(parser, 1);
  return 0;
}

}  // namespace popbridge::protocol
