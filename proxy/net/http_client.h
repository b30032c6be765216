// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "protocol/http/http_response.h"
#include "proxy/base/deferred_delete.h"
#include "proxy/net/connection.h"
#include "proxy/net/tls_context.h"

namespace popbridge::proxy {

// An absolute http:// or https:// URL, split for connecting.
struct HttpUrl {
  bool tls = false;
  std::string host;        // IPv6 without brackets
  std::uint16_t port = 0;  // 80 or 443 when the URL has none
  std::string target;      // path and query, at least "/"; the fragment is dropped

  // For the Host header: brackets around IPv6, the port only when not the default.
  std::string authority() const;
  // "https://host:port": connections are reused only within one origin.
  std::string origin() const;
  // host:port with the port always (CONNECT's request target).
  std::string authority_with_port() const;
};

// nullopt, with the reason in error, for anything else. Userinfo ("user:pass@") is
// refused: credentials belong in headers, where they are not logged with the URL.
std::optional<HttpUrl> parse_http_url(std::string_view url, std::string& error);
// A reference (a Location header, a JMAP apiUrl) made absolute against base, an absolute
// http(s) URL: absolute references stay, "//host/p" takes base's scheme, "/p" its origin,
// anything else replaces base's last path segment. Dot segments are not removed.
std::string resolve_url(std::string_view base, std::string_view reference);

// application/x-www-form-urlencoded, byte for byte as the WHATWG URL standard (and
// OAuth2 token requests, RFC 6749 appendix B) want it: space as '+', everything but
// ALPHA / DIGIT / "*-._" percent-encoded.
std::string form_urlencode(std::string_view value);
// "name=value&name=value", each side encoded as above.
std::string form_urlencode(const std::vector<std::pair<std::string, std::string>>& fields);

// An egress proxy, as curl and most tools read it from the environment: HTTPS_PROXY
// (https_proxy) for https URLs, tunnelled with CONNECT; HTTP_PROXY (http_proxy) for
// http URLs, sent in absolute form; NO_PROXY (no_proxy): host names, domain suffixes
// (".example.com" or "example.com") and addresses that go direct, or "*" for all.
// Proxies are reached over plain HTTP, without authentication.
struct HttpProxy {
  std::optional<HttpUrl> for_http;
  std::optional<HttpUrl> for_https;
  std::vector<std::string> no_proxy;  // lower-case, without a leading '.'

  // The proxy for a request to url, or null when it goes direct.
  const HttpUrl* for_url(const HttpUrl& url) const;
};
// From the environment; `problems` gets a line for each variable that cannot be used.
HttpProxy proxy_from_environment(std::vector<std::string>& problems);

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  // Sent in order. Host is added unless given here; Content-Length is always computed,
  // so giving it (or Transfer-Encoding) is an error. Names and values must not contain
  // CR, LF or NUL.
  std::vector<protocol::HttpHeader> headers;
  std::string body;
  // The whole exchange: resolving, connecting, TLS, sending and the complete response;
  // for a streamed body, until its headers, then each wait for more of the body (time
  // spent paused not counted).
  std::chrono::milliseconds timeout{10'000};
  // Streams the response body there instead of into HttpResult::body, when its
  // on_response_head accepts it: a download of any size, read with backpressure
  // (RequestHandle::pause_reading). Must stay valid until the callback has run or the
  // request is cancelled; its calls come from the loop, never from request().
  protocol::HttpBodyReceiver* body_receiver = nullptr;
  // A POST that may go again on a new connection when a kept-alive one turns out to have
  // been closed before any response byte (as GET and the other idempotent methods always
  // may): one whose repetition does no harm, like a JMAP query.
  bool retry_safe = false;
};

enum class HttpError {
  kNone,
  kInvalidRequest,  // bad URL, method or header
  kResolve,         // the host name did not resolve
  kConnect,         // no TCP connection
  kTls,             // no TLS context, handshake or certificate verification failed
  kTimeout,         // HttpRequest::timeout passed
  kProtocol,        // not HTTP, or the connection ended before the response did
  kTooLarge,        // response headers or body past the client's limits
  kStopped,         // the body receiver said it had enough
};
// "resolve", "timeout", ...: for logs and metric labels.
std::string_view to_string(HttpError error);

struct HttpResult {
  HttpError error = HttpError::kNone;
  std::string error_text;  // why, for logs; never contains request headers or body
  int status = 0;          // any status: a 500 is a response, not an error here
  std::vector<protocol::HttpHeader> headers;
  std::string body;  // empty when it was streamed to HttpRequest::body_receiver
  bool streamed = false;

  bool ok() const { return error == HttpError::kNone; }
  // The first value of a header, case-insensitively.
  std::optional<std::string_view> header(std::string_view name) const {
    return protocol::find_header(headers, name);
  }
};

struct HttpClientOptions {
  // Trust anchors for https; this and verify_certificate are ignored when tls_context
  // is given.
  std::string ca_file = "/etc/ssl/certs/ca-certificates.crt";
  // Off only for tests: no chain or name check (the host name is still sent as SNI).
  bool verify_certificate = true;
  // Borrowed instead of building one from ca_file (e.g. one context for all workers);
  // must outlive the client.
  SSL_CTX* tls_context = nullptr;
  std::size_t max_response_header_bytes = 16 * 1024;
  std::size_t max_response_body_bytes = 1024 * 1024;
  // Kept-alive connections wait this long for the next request to their origin, or less
  // when the server announces a shorter "Keep-Alive: timeout=".
  std::chrono::milliseconds idle_timeout{30'000};
  // Idle connections kept over all origins; the oldest goes first. 0 turns reuse off
  // (and sends "Connection: close").
  std::size_t max_idle_connections = 4;
  // Where requests go through; by default nowhere (see proxy_from_environment()).
  HttpProxy proxy;
};

// An asynchronous HTTP/1.1 client on one libuv loop, for the auth_http hook and OAuth2
// token endpoints: small requests, small responses, a few origins.
//
// Callbacks: each request's callback runs exactly once, on a later loop turn than
// request() (never inside it, even for an invalid URL), unless the request is cancelled
// first or the client is destroyed first; then it never runs. Dropping the
// RequestHandle cancels, so an owner that holds the handle as a member can die mid-request
// safely. The callback may issue new requests and drop handles; it must not destroy the
// client (retire the owner on a later turn, as everything else here is).
//
// Reuse: a response that allows keep-alive parks its connection, per origin, for the
// next request. A request on a parked connection that the server had closed in the
// meantime is retried once on a new connection, if no response byte arrived and the
// method is idempotent (a POST is never sent twice).
class HttpClient {
 public:
  using Callback = std::function<void(HttpResult result)>;

 private:
  class Exchange;
  class IdleConnection;

 public:
  // Cancels its request when dropped, cancel()ed, or assigned over, unless the callback
  // has run. Outliving the client is fine.
  class RequestHandle {
   public:
    RequestHandle() = default;
    RequestHandle(RequestHandle&& other) noexcept = default;
    RequestHandle& operator=(RequestHandle&& other) noexcept;
    ~RequestHandle() { cancel(); }
    RequestHandle(const RequestHandle&) = delete;
    RequestHandle& operator=(const RequestHandle&) = delete;

    void cancel();
    // The callback has not run and will.
    bool pending() const;
    // Backpressure for a streamed body: no more is read from the server until resumed.
    void pause_reading();
    void resume_reading();

   private:
    friend class HttpClient;
    explicit RequestHandle(std::weak_ptr<Exchange> exchange) : exchange_(std::move(exchange)) {}
    std::weak_ptr<Exchange> exchange_;
  };

  explicit HttpClient(uv_loop_t* loop, HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Why https requests will fail (the CA file did not load); empty when all is well, so
  // a caller can refuse a bad configuration at start-up.
  const std::string& tls_error() const { return tls_error_; }

  [[nodiscard]] RequestHandle request(HttpRequest request, Callback done);

  std::size_t active_requests() const { return active_.size(); }
  std::size_t idle_connections() const { return idle_.size(); }

 private:
  void retire(Exchange* exchange);
  // A kept-alive connection to origin, or null.
  ConnectionPtr take_idle(const std::string& origin);
  void park(const std::string& origin, ConnectionPtr connection, std::chrono::milliseconds idle);
  void drop_idle(IdleConnection* idle);

  uv_loop_t* loop_;
  HttpClientOptions options_;
  SslCtxPtr own_tls_context_;
  SSL_CTX* tls_context_ = nullptr;
  std::string tls_error_;
  std::unordered_map<Exchange*, std::shared_ptr<Exchange>> active_;
  std::vector<std::shared_ptr<IdleConnection>> idle_;  // oldest first
};

}  // namespace popbridge::proxy
