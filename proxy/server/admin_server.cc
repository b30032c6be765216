// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/admin_server.h"

#include "protocol/http/http_request.h"
#include "proxy/base/log.h"
#include "proxy/net/connection.h"
#include "proxy/net/resolver.h"

namespace popbridge::proxy {
namespace {

// A scraper that connects and says nothing must not hold a socket forever.
constexpr std::uint64_t kIdleTimeoutMs = 30'000;

std::string response(int status, std::string_view reason, std::string_view content_type,
                     std::string_view body, bool keep_alive) {
  std::string text = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) + "\r\n";
  text += "Content-Type: ";
  text += content_type;
  text += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  text += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  text += "Cache-Control: no-store\r\n\r\n";
  text += body;
  return text;
}

}  // namespace

class AdminServer::Exchange final : public Connection::Handler {
 public:
  Exchange(AdminServer& server, ConnectionPtr connection)
      : server_(server), connection_(std::move(connection)), idle_(server.loop_) {
    connection_->set_handler(this);
  }

  void start() {
    arm_idle();
    connection_->start_reading();
  }

  void on_data(std::string_view bytes) override {
    if (done_) {
      return;
    }
    arm_idle();
    using Status = protocol::HttpRequestParser::Status;
    // One read may hold several pipelined requests: answer each in order.
    while (!bytes.empty() && !done_) {
      std::size_t used = 0;
      const Status status = parser_.feed(bytes, &used);
      bytes.remove_prefix(used);
      if (status == Status::kError) {
        send(response(400, "Bad Request", "text/plain", "bad request\n", false), false);
        return;
      }
      if (status != Status::kComplete) {
        return;
      }
      answer();
    }
  }

  void on_disconnected(std::string_view) override { finish(); }

 private:
  void answer() {
    const bool keep_alive = parser_.keep_alive();
    const std::string_view path = parser_.path();
    const bool head = parser_.method() == "HEAD";
    std::string reply;
    if (parser_.method() != "GET" && !head) {
      reply = response(405, "Method Not Allowed", "text/plain", "only GET\n", keep_alive);
    } else if (path == "/metrics") {
      reply = response(200, "OK", "text/plain; version=0.0.4; charset=utf-8",
                       server_.hooks_.metrics_text(), keep_alive);
    } else if (path == "/healthz") {
      reply = response(200, "OK", "text/plain", "ok\n", keep_alive);
    } else if (path == "/readyz") {
      reply = server_.hooks_.ready()
                  ? response(200, "OK", "text/plain", "ready\n", keep_alive)
                  : response(503, "Service Unavailable", "text/plain", "not ready\n", keep_alive);
    } else {
      reply = response(404, "Not Found", "text/plain", "not found\n", keep_alive);
    }
    if (head) {
      reply.resize(reply.find("\r\n\r\n") + 4);
    }
    send(reply, keep_alive);
  }

  void send(const std::string& reply, bool keep_alive) {
    connection_->write(reply);
    if (keep_alive) {
      parser_.reset();
      return;
    }
    connection_->close_after_flush();
    finish();
  }

  void arm_idle() {
    idle_.start(kIdleTimeoutMs, [this] {
      connection_->close();
      finish();
    });
  }

  void finish() {
    if (done_) {
      return;
    }
    done_ = true;
    idle_.stop();
    // Retired now and destroyed a turn later, perhaps after the server: nothing the
    // connection still does (a flush, a close) may reach this exchange.
    connection_->set_handler(nullptr);
    server_.finished(this);
  }

  AdminServer& server_;
  ConnectionPtr connection_;
  Timer idle_;
  protocol::HttpRequestParser parser_;
  bool done_ = false;
};

AdminServer::AdminServer(uv_loop_t* loop, Hooks hooks) : loop_(loop), hooks_(std::move(hooks)) {}

AdminServer::~AdminServer() { stop(); }

bool AdminServer::start(const config::Endpoint& address, std::string& error) {
  sockaddr_storage socket_address{};
  if (!parse_ip_literal(address, socket_address)) {
    error = "metrics.address must be an IP literal, got '" + address.host + "'";
    return false;
  }
  listener_ = std::make_unique<UvHandle<uv_tcp_t>>(
      [this](uv_tcp_t* handle) { return uv_tcp_init(loop_, handle); });
  listener_->get()->data = this;
  int status = uv_tcp_bind(listener_->get(), reinterpret_cast<const sockaddr*>(&socket_address), 0);
  if (status == 0) {
    status = uv_listen(reinterpret_cast<uv_stream_t*>(listener_->get()), 128,
                       &AdminServer::on_connection);
  }
  if (status != 0) {
    error = "metrics endpoint on " + address.to_string() + ": " + uv_strerror(status);
    listener_.reset();
    return false;
  }
  log::info("admin_listening", {{"address", address.to_string()}});
  return true;
}

void AdminServer::stop() {
  listener_.reset();
  exchanges_.clear();
}

void AdminServer::on_connection(uv_stream_t* stream, int status) noexcept {
  auto* self = static_cast<AdminServer*>(stream->data);
  if (self == nullptr || status != 0) {
    return;
  }
  ConnectionPtr connection = Connection::create(self->loop_, nullptr);
  if (uv_accept(stream, connection->stream()) != 0) {
    return;
  }
  auto exchange = std::make_shared<Exchange>(*self, std::move(connection));
  Exchange* raw = exchange.get();
  self->exchanges_.emplace(raw, std::move(exchange));
  raw->start();
}

void AdminServer::finished(Exchange* exchange) {
  auto found = exchanges_.find(exchange);
  if (found == exchanges_.end()) {
    return;
  }
  DeferredDelete::of(loop_).retire(std::move(found->second));
  exchanges_.erase(found);
}

}  // namespace popbridge::proxy
