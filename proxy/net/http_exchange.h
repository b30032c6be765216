// SPDX-License-Identifier: Apache-2.0
// HttpClient::Exchange, one request from start to callback, with the request-text helpers
// it uses. Private to the HTTP client: only http_client.cc includes this.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/common/ascii.h"
#include "protocol/common/secret.h"
#include "proxy/base/log.h"
#include "proxy/base/uv_handle.h"
#include "proxy/net/http_client.h"
#include "proxy/net/http_text.h"
#include "proxy/net/resolver.h"

namespace popbridge::proxy {
namespace {  // one translation unit includes this

using http_text::is_alnum;
using protocol::ascii_lowercase;

// RFC 9110 section 5.6.2.
bool is_token(std::string_view text) {
  constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
  return !text.empty() && std::all_of(text.begin(), text.end(), [&](char c) {
    return is_alnum(c) || kSpecials.find(c) != std::string_view::npos;
  });
}

// Field content: no CR or LF (they would start a header of the server's choosing) and no
// other control characters; tabs and obs-text are allowed.
bool is_field_value(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte == '\t' || (byte >= 0x20 && byte != 0x7F);
  });
}

bool is_idempotent(std::string_view method) {
  for (std::string_view safe : {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}) {
    if (method == safe) {
      return true;
    }
  }
  return false;
}

// Overwrites the whole buffer, including bytes an earlier, longer value left behind.
void scrub(std::string& text) {
  text.resize(text.capacity());
  protocol::wipe(text.data(), text.size());
  text.clear();
}

// "Keep-Alive: timeout=5, max=100" (RFC 2068 section 19.7.1.1): the server closes idle
// connections after 5 s, so a request sent later would race that close.
std::optional<std::chrono::milliseconds> announced_idle_timeout(
    const std::vector<protocol::HttpHeader>& headers) {
  for (std::string_view value : protocol::find_headers(headers, "Keep-Alive")) {
    const std::string text = ascii_lowercase(value);
    const std::size_t at = text.find("timeout=");
    if (at == std::string::npos) {
      continue;
    }
    const char* first = text.data() + at + 8;
    const char* last = text.data() + text.size();
    std::uint32_t seconds = 0;
    if (std::from_chars(first, last, seconds).ec == std::errc{}) {
      return std::chrono::seconds(seconds);
    }
  }
  return std::nullopt;
}

}  // namespace

// One request from start to callback. Owned by the client while active, then by its
// deferred delete for a loop turn; handles hold it weakly.
class HttpClient::Exchange final : public Connection::Handler,
                                   public protocol::HttpBodyReceiver,
                                   public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(HttpClient& client, HttpRequest request, Callback done)
      : client_(&client),
        loop_(client.loop_),
        request_(std::move(request)),
        done_(std::move(done)),
        timer_(client.loop_),
        resolver_(client.loop_),
        parser_(protocol::HttpResponseLimits{client.options_.max_response_header_bytes,
                                             client.options_.max_response_body_bytes}) {
    if (request_.body_receiver != nullptr) {
      parser_.stream_body_to(this);
    }
  }
  ~Exchange() override {
    scrub(text_);
    scrub_request();
  }
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // The work starts on the next loop turn, so request() never calls back.
  void schedule() {
    timer_.start(0, [this] { start(); });
  }
  bool finished() const { return state_ == State::kDone; }

  // The caller dropped its handle: no callback, and the connection is not reused (a
  // response may be half-way through it).
  void cancel() {
    if (state_ == State::kDone) {
      return;
    }
    state_ = State::kDone;
    timer_.stop();
    connection_.reset();
    scrub(text_);
    if (client_ != nullptr) {
      client_->retire(this);
    }
    // Last: destroying the callback may drop other handles (the caller's handle keeps
    // this alive meanwhile).
    Callback dropped = std::move(done_);
    done_ = nullptr;
  }

  void pause_reading() {
    if (paused_ || state_ == State::kDone) {
      return;
    }
    paused_ = true;
    if (state_ == State::kAwaitingResponse && parser_.streaming()) {
      timer_.stop();
      connection_->stop_reading();
    }
  }

  void resume_reading() {
    if (!paused_ || state_ == State::kDone) {
      return;
    }
    paused_ = false;
    if (state_ == State::kAwaitingResponse && parser_.streaming()) {
      connection_->start_reading();
      start_timeout(kBodySilence);
    }
  }

  bool on_response_head(int status, const std::vector<protocol::HttpHeader>& headers) override {
    if (!request_.body_receiver->on_response_head(status, headers)) {
      return false;
    }
    // From here the timeout counts silence, not the whole download.
    start_timeout(kBodySilence);
    return true;
  }

  bool on_body_data(std::string_view data) override {
    if (state_ != State::kAwaitingResponse) {
      return false;
    }
    if (!paused_) {
      start_timeout(kBodySilence);
    }
    const bool more = request_.body_receiver->on_body_data(data);
    // The receiver may have paused (or been cancelled) meanwhile.
    if (paused_ && state_ == State::kAwaitingResponse) {
      timer_.stop();
      connection_->stop_reading();
    }
    return more && state_ == State::kAwaitingResponse;
  }

  // The client is being destroyed; this goes with it.
  void orphan() {
    client_ = nullptr;
    state_ = State::kDone;
    Callback dropped = std::move(done_);
    done_ = nullptr;
  }

  void on_connected(int status) override {
    if (state_ != State::kConnecting) {
      return;
    }
    if (status != 0) {
      fail(HttpError::kConnect, "connect to " + origin_ + ": " + uv_strerror(status));
      return;
    }
    connection_->start_reading();
    if (proxy_ && url_.tls) {
      // RFC 9110 section 9.3.6: a tunnel to the origin, then TLS through it end to end.
      state_ = State::kTunnelling;
      const std::string authority = url_.authority_with_port();
      connection_->write("CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n");
      return;
    }
    secure_and_send();
  }

  void secure_and_send() {
    if (url_.tls) {
      // start_tls reports a failed handshake start through on_disconnected.
      state_ = State::kHandshaking;
      const bool started =
          connection_->start_tls(tls_context_, Connection::Role::kClient, url_.host);
      if (state_ == State::kDone) {
        return;
      }
      if (!started) {
        fail(HttpError::kTls, "TLS setup failed: " + take_tls_errors());
        return;
      }
    }
    // During a handshake the connection holds the request until it is done.
    send();
  }

  void on_data(std::string_view bytes) override {
    if (state_ == State::kTunnelling) {
      on_tunnel_reply(bytes);
      return;
    }
    if (state_ != State::kAwaitingResponse) {
      return;
    }
    using Status = protocol::HttpResponseParser::Status;
    const Status status = parser_.feed(bytes);
    if (status == Status::kIncomplete) {
      if (state_ == State::kAwaitingResponse && connection_ != nullptr) {
        connection_->expect_bytes(parser_.body_left());
      }
      return;
    }
    if (connection_ != nullptr) {
      connection_->expect_bytes(0);  // kept for another request: every byte wakes again
    }
    if (status == Status::kError) {
      fail_from_parser("");
      return;
    }
    // Extra bytes mean the server is out of step with our requests: not reusable.
    succeed(parser_.keep_alive() && parser_.trailing_bytes() == 0);
  }

  void on_disconnected(std::string_view reason) override {
    if (state_ == State::kDone) {
      return;
    }
    if (connection_ != nullptr && connection_->tls_active() && !connection_->tls_established()) {
      fail(HttpError::kTls, std::string(reason));
      return;
    }
    if (state_ == State::kConnecting) {
      fail(HttpError::kConnect, std::string(reason));
      return;
    }
    if (state_ == State::kTunnelling) {
      fail(HttpError::kConnect, "the proxy closed the connection before the tunnel was open (" +
                                    std::string(reason) + ")");
      return;
    }
    // A kept-alive connection the server closed while it sat idle: nothing was
    // processed, so an idempotent request may go again, once, on a new connection.
    if (reused_ && !retried_ && !parser_.started() &&
        (request_.retry_safe || is_idempotent(request_.method))) {
      retried_ = true;
      connection_.reset();
      acquire(false);
      return;
    }
    using Status = protocol::HttpResponseParser::Status;
    if (parser_.finish_eof() == Status::kComplete) {
      succeed(false);  // the body ran until the close
      return;
    }
    fail_from_parser(reason);
  }

 private:
  enum class State {
    kQueued,
    kResolving,
    kConnecting,
    kTunnelling,  // CONNECT sent to the proxy, waiting for its answer
    kHandshaking,
    kAwaitingResponse,
    kDone
  };

  void on_tunnel_reply(std::string_view bytes) {
    tunnel_reply_.append(bytes);
    const std::size_t end = tunnel_reply_.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (tunnel_reply_.size() > 16 * 1024) {
        fail(HttpError::kProtocol, "the proxy's answer to CONNECT is too long");
      }
      return;
    }
    const std::string status_line = tunnel_reply_.substr(0, tunnel_reply_.find("\r\n"));
    // "HTTP/1.1 200 Connection established": any 2xx opens the tunnel.
    const bool opened =
        status_line.size() >= 12 && status_line.rfind("HTTP/1.", 0) == 0 && status_line[9] == '2';
    if (!opened) {
      fail(HttpError::kConnect, "the proxy refused CONNECT to " + url_.authority_with_port() +
                                    ": " + sanitized(status_line));
      return;
    }
    if (end + 4 != tunnel_reply_.size()) {
      fail(HttpError::kProtocol, "the proxy sent data before the tunnel's TLS");
      return;
    }
    tunnel_reply_.clear();
    secure_and_send();
  }

  static std::string sanitized(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, 200)) {
      out.push_back(c >= 0x20 && c <= 0x7e ? c : '?');
    }
    return out;
  }

  void start() {
    if (state_ != State::kQueued) {
      return;
    }
    std::string error;
    std::optional<HttpUrl> url = parse_http_url(request_.url, error);
    if (!url) {
      fail(HttpError::kInvalidRequest, error);
      return;
    }
    url_ = std::move(*url);
    origin_ = url_.origin();
    if (client_ != nullptr) {
      if (const HttpUrl* proxy = client_->options_.proxy.for_url(url_)) {
        proxy_ = *proxy;
      }
    }
    if (!build_request_text(error)) {
      fail(HttpError::kInvalidRequest, error);
      return;
    }
    if (url_.tls) {
      tls_context_ = client_->tls_context_;
      if (tls_context_ == nullptr) {
        fail(HttpError::kTls, "no TLS client context: " + client_->tls_error_);
        return;
      }
    }
    start_timeout("no complete response from ");
    acquire(true);
  }

  // The timeout while a body streams: it counts silence, not the whole download.
  static constexpr std::string_view kBodySilence = "no more of the body from ";

  void start_timeout(std::string_view what) {
    const auto timeout_ms = static_cast<std::uint64_t>(std::max<std::int64_t>(
        1, std::chrono::duration_cast<std::chrono::milliseconds>(request_.timeout).count()));
    timer_.start(timeout_ms, [this, timeout_ms, what] {
      // Waiting for a large read (Connection::expect_bytes), the loop is not woken for a
      // server that sends less than that in the whole timeout: slow, but not silent. (A
      // deadline for the whole response is missed either way: a large read is awaited only
      // while more than it is still to come.)
      if (what == kBodySilence && connection_ != nullptr) {
        switch (connection_->check_silence()) {
          case Connection::Silence::kSlowPeer:
            log::info(
                "upstream_slow",
                {{"origin", origin_},
                 {"reason", "sent less than " + std::to_string(Connection::kLargeRead / 1024) +
                                " KiB of a body within the timeout"}});
            [[fallthrough]];
          case Connection::Silence::kBytesWaiting:
          case Connection::Silence::kRecordArriving:
            start_timeout(kBodySilence);
            return;
          case Connection::Silence::kSilent:
            break;
        }
      }
      fail(HttpError::kTimeout,
           std::string(what) + origin_ + " within " + std::to_string(timeout_ms) + " ms");
    });
  }

  bool build_request_text(std::string& error) {
    if (!is_token(request_.method)) {
      error = "invalid method";
      return false;
    }
    bool has_host = false;
    bool has_connection = false;
    // An upper bound of the size first: growing the buffer would leave copies of
    // credentials in freed memory. 128 covers the fixed text (request line, Host,
    // Connection and Content-Length lines, blank line).
    std::size_t size = request_.method.size() + url_.target.size() + 2 * url_.authority().size() +
                       request_.body.size() + 136;
    for (const protocol::HttpHeader& header : request_.headers) {
      if (!is_token(header.name) || !is_field_value(header.value)) {
        error = "invalid header name or value";
        return false;
      }
      if (protocol::header_name_equals(header.name, "Content-Length") ||
          protocol::header_name_equals(header.name, "Transfer-Encoding")) {
        error = header.name + " is set by the client";
        return false;
      }
      has_host = has_host || protocol::header_name_equals(header.name, "Host");
      has_connection = has_connection || protocol::header_name_equals(header.name, "Connection");
      size += header.name.size() + header.value.size() + 4;
    }
    const bool pooling = client_->options_.max_idle_connections > 0;
    const std::string& method = request_.method;
    const bool send_length =
        !request_.body.empty() || method == "POST" || method == "PUT" || method == "PATCH";

    text_.reserve(size);
    text_ += method;
    text_ += ' ';
    if (proxy_ && !url_.tls) {
      text_ += "http://" + url_.authority();  // absolute form, for the proxy (RFC 9112 3.2.2)
    }
    text_ += url_.target;
    text_ += " HTTP/1.1\r\n";
    if (!has_host) {
      text_ += "Host: " + url_.authority() + "\r\n";
    }
    for (const protocol::HttpHeader& header : request_.headers) {
      text_ += header.name;
      text_ += ": ";
      text_ += header.value;
      text_ += "\r\n";
    }
    if (!pooling && !has_connection) {
      text_ += "Connection: close\r\n";
    }
    if (send_length) {
      text_ += "Content-Length: " + std::to_string(request_.body.size()) + "\r\n";
    }
    text_ += "\r\n";
    text_ += request_.body;
    scrub_request();
    return true;
  }

  // Header values and the body may hold a password (Auth-Pass) or a client secret; the
  // serialised request keeps what a retry needs.
  void scrub_request() {
    for (protocol::HttpHeader& header : request_.headers) {
      scrub(header.value);
    }
    scrub(request_.body);
  }

  void acquire(bool allow_pooled) {
    if (allow_pooled && client_ != nullptr) {
      if (ConnectionPtr pooled = client_->take_idle(origin_)) {
        connection_ = std::move(pooled);
        connection_->set_handler(this);
        reused_ = true;
        send();
        return;
      }
    }
    reused_ = false;
    state_ = State::kResolving;
    config::Endpoint endpoint;
    endpoint.host = proxy_ ? proxy_->host : url_.host;
    endpoint.port = proxy_ ? proxy_->port : url_.port;
    // May call back at once for an IP literal; we are on a timer or I/O callback here.
    resolver_.resolve(endpoint, [this](int status, const sockaddr_storage& address) {
      on_resolved(status, address);
    });
  }

  void on_resolved(int status, const sockaddr_storage& address) {
    if (state_ != State::kResolving) {
      return;
    }
    if (status != 0) {
      fail(HttpError::kResolve,
           "cannot resolve " + (proxy_ ? proxy_->host : url_.host) + ": " + uv_strerror(status));
      return;
    }
    state_ = State::kConnecting;
    connection_ = Connection::create(loop_, this);
    const int result = connection_->connect(reinterpret_cast<const sockaddr*>(&address));
    if (result != 0) {
      fail(HttpError::kConnect, "connect to " + origin_ + ": " + uv_strerror(result));
    }
  }

  void send() {
    state_ = State::kAwaitingResponse;
    parser_.reset();
    if (request_.method == "HEAD") {
      parser_.expect_no_body();
    }
    connection_->write(text_);
  }

  void succeed(bool reusable) {
    HttpResult result;
    result.status = parser_.status_code();
    result.headers = parser_.take_headers();
    result.body = parser_.take_body();
    result.streamed = parser_.streaming();
    idle_for_ = client_ != nullptr ? client_->options_.idle_timeout : std::chrono::milliseconds(0);
    if (auto announced = announced_idle_timeout(result.headers)) {
      // A second's margin, so that we never send just as the server closes.
      idle_for_ = std::min(idle_for_, *announced - std::chrono::seconds(1));
    }
    finish(std::move(result), reusable);
  }

  void fail_from_parser(std::string_view reason) {
    using Error = protocol::HttpResponseParser::Error;
    const Error error = parser_.error();
    std::string text(parser_.error_text());
    if (!reason.empty()) {
      text += " (" + std::string(reason) + ")";
    }
    if (error == Error::kStopped) {
      fail(HttpError::kStopped, text);
      return;
    }
    fail(error == Error::kHeadersTooLarge || error == Error::kBodyTooLarge ? HttpError::kTooLarge
                                                                           : HttpError::kProtocol,
         text);
  }

  void fail(HttpError error, std::string text) {
    HttpResult result;
    result.error = error;
    result.error_text = std::move(text);
    finish(std::move(result), false);
  }

  void finish(HttpResult result, bool reusable) {
    if (state_ == State::kDone) {
      return;
    }
    state_ = State::kDone;
    timer_.stop();
    // retire() hands the client's reference to the loop's deferred delete; this one keeps us alive
    // through the callback whatever the callback does.
    std::shared_ptr<Exchange> self = shared_from_this();
    if (connection_ != nullptr && reusable && client_ != nullptr) {
      client_->park(origin_, std::move(connection_), idle_for_);
    }
    connection_.reset();
    scrub(text_);
    Callback done = std::move(done_);
    done_ = nullptr;
    if (client_ != nullptr) {
      client_->retire(this);
    }
    // Last: nothing of the client or of this is touched after the callback.
    if (done) {
      done(std::move(result));
    }
  }

  HttpClient* client_;
  uv_loop_t* loop_;
  HttpRequest request_;
  Callback done_;
  State state_ = State::kQueued;
  Timer timer_;  // the deferred start, then the request's timeout
  Resolver resolver_;
  HttpUrl url_;
  std::optional<HttpUrl> proxy_;  // where the connection goes instead of the origin
  std::string tunnel_reply_;      // the proxy's answer to CONNECT, until its end
  std::string origin_;
  std::string text_;  // the serialised request, kept for a retry
  SSL_CTX* tls_context_ = nullptr;
  ConnectionPtr connection_;
  protocol::HttpResponseParser parser_;
  bool reused_ = false;
  bool retried_ = false;
  bool paused_ = false;
  std::chrono::milliseconds idle_for_{0};
};

}  // namespace popbridge::proxy
