// SPDX-License-Identifier: Apache-2.0
#include "proxy/net/http_client.h"

#include <algorithm>

#include "proxy/net/http_exchange.h"

namespace popbridge::proxy {

std::string_view to_string(HttpError error) {
  switch (error) {
    case HttpError::kNone:
      return "none";
    case HttpError::kInvalidRequest:
      return "invalid_request";
    case HttpError::kResolve:
      return "resolve";
    case HttpError::kConnect:
      return "connect";
    case HttpError::kTls:
      return "tls";
    case HttpError::kTimeout:
      return "timeout";
    case HttpError::kProtocol:
      return "protocol";
    case HttpError::kTooLarge:
      return "too_large";
    case HttpError::kStopped:
      return "stopped";
  }
  return "unknown";
}

// A kept-alive connection waiting for the next request to its origin. Anything it
// hears before then (a close, stray bytes) retires it.
class HttpClient::IdleConnection final : public Connection::Handler {
 public:
  IdleConnection(HttpClient& client, std::string origin, ConnectionPtr connection,
                 std::chrono::milliseconds idle)
      : client_(client),
        origin_(std::move(origin)),
        connection_(std::move(connection)),
        timer_(client.loop_) {
    connection_->set_handler(this);
    // A streamed download paused on its last piece leaves the socket unread: an idle
    // connection must read, to hear the server close it, and to be reusable.
    connection_->start_reading();
    timer_.start(static_cast<std::uint64_t>(idle.count()), [this] { client_.drop_idle(this); });
  }
  IdleConnection(const IdleConnection&) = delete;
  IdleConnection& operator=(const IdleConnection&) = delete;

  const std::string& origin() const { return origin_; }
  bool usable() const { return connection_ != nullptr && !connection_->closing(); }
  ConnectionPtr take() {
    timer_.stop();
    return std::move(connection_);
  }
  void close() {
    timer_.stop();
    connection_.reset();
  }

  void on_data(std::string_view) override { client_.drop_idle(this); }
  void on_disconnected(std::string_view) override { client_.drop_idle(this); }

 private:
  HttpClient& client_;
  std::string origin_;
  ConnectionPtr connection_;
  Timer timer_;
};

HttpClient::RequestHandle& HttpClient::RequestHandle::operator=(RequestHandle&& other) noexcept {
  if (this != &other) {
    cancel();
    exchange_ = std::move(other.exchange_);
  }
  return *this;
}

void HttpClient::RequestHandle::cancel() {
  if (std::shared_ptr<Exchange> exchange = exchange_.lock()) {
    exchange->cancel();
  }
  exchange_.reset();
}

void HttpClient::RequestHandle::pause_reading() {
  if (std::shared_ptr<Exchange> exchange = exchange_.lock()) {
    exchange->pause_reading();
  }
}

void HttpClient::RequestHandle::resume_reading() {
  if (std::shared_ptr<Exchange> exchange = exchange_.lock()) {
    exchange->resume_reading();
  }
}

bool HttpClient::RequestHandle::pending() const {
  std::shared_ptr<Exchange> exchange = exchange_.lock();
  return exchange != nullptr && !exchange->finished();
}

HttpClient::HttpClient(uv_loop_t* loop, HttpClientOptions options)
    : loop_(loop), options_(std::move(options)) {
  if (options_.tls_context != nullptr) {
    tls_context_ = options_.tls_context;
    return;
  }
  TlsContextResult result = make_client_context(options_.ca_file, options_.verify_certificate);
  own_tls_context_ = std::move(result.context);
  tls_context_ = own_tls_context_.get();
  tls_error_ = std::move(result.error);
}

HttpClient::~HttpClient() {
  // Taken out first: destroying a callback may drop other handles, which cancel into
  // active_ while we walk it.
  auto active = std::move(active_);
  active_.clear();
  for (auto& [raw, exchange] : active) {
    exchange->orphan();
  }
  active.clear();
  idle_.clear();
}

HttpClient::RequestHandle HttpClient::request(HttpRequest request, Callback done) {
  auto exchange = std::make_shared<Exchange>(*this, std::move(request), std::move(done));
  Exchange* raw = exchange.get();
  active_.emplace(raw, exchange);
  raw->schedule();
  return RequestHandle(exchange);
}

void HttpClient::retire(Exchange* exchange) {
  auto found = active_.find(exchange);
  if (found == active_.end()) {
    return;
  }
  DeferredDelete::of(loop_).retire(std::move(found->second));
  active_.erase(found);
}

ConnectionPtr HttpClient::take_idle(const std::string& origin) {
  // Newest first: the least likely to have been closed by the server.
  for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
    if ((*it)->origin() != origin || !(*it)->usable()) {
      continue;
    }
    std::shared_ptr<IdleConnection> idle = std::move(*it);
    idle_.erase(std::next(it).base());
    ConnectionPtr connection = idle->take();
    DeferredDelete::of(loop_).retire(std::move(idle));
    return connection;
  }
  return nullptr;
}

void HttpClient::park(const std::string& origin, ConnectionPtr connection,
                      std::chrono::milliseconds idle) {
  if (options_.max_idle_connections == 0 || idle.count() <= 0 || connection->closing()) {
    return;  // dropping the pointer closes the connection
  }
  while (idle_.size() >= options_.max_idle_connections) {
    std::shared_ptr<IdleConnection> oldest = std::move(idle_.front());
    idle_.erase(idle_.begin());
    oldest->close();
    DeferredDelete::of(loop_).retire(std::move(oldest));
  }
  idle_.push_back(std::make_shared<IdleConnection>(*this, origin, std::move(connection), idle));
}

void HttpClient::drop_idle(IdleConnection* idle) {
  auto found = std::find_if(idle_.begin(), idle_.end(),
                            [idle](const auto& entry) { return entry.get() == idle; });
  if (found == idle_.end()) {
    return;
  }
  std::shared_ptr<IdleConnection> entry = std::move(*found);
  idle_.erase(found);
  // Usually called from the entry's own callback: closed now, destroyed a turn later.
  entry->close();
  DeferredDelete::of(loop_).retire(std::move(entry));
}

}  // namespace popbridge::proxy
