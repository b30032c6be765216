// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/pop3/pop3_command.h"
#include "proxy/base/deferred_delete.h"
#include "proxy/base/log.h"
#include "proxy/pop3/pop3_session.h"
#include "tests/support/fake_mail_store.h"

namespace popbridge::testing {

// One real Pop3Session on its own libuv loop, its client end a plain loopback socket the
// test reads and writes, its mail store a FakeMailStore. Nothing here waits by time: every
// wait runs the loop until a condition holds, with a deadline.
class SessionHarness final : proxy::SessionHost {
 public:
  // The whole configuration; the listener and upstream below are always there. A test's
  // extra YAML follows it: top-level sections, or indented keys that continue upstream.
  static constexpr std::string_view kBaseConfig = R"(
listeners:
  - name: pop3
    address: 127.0.0.1:110
    tls: none
auth:
  allow_plaintext: true
  failure_delay: 0s
  max_failure_delay: 0s
logging:
  level: off
upstream:
  address: 127.0.0.1:143
  tls: none
  uidl_format: uid
)";

  explicit SessionHarness(std::shared_ptr<FakeMailbox> mailbox, std::string_view extra_yaml = {})
      : mailbox_(std::move(mailbox)) {
    config::LoadResult loaded =
        config::load_config_string(std::string(kBaseConfig) + std::string(extra_yaml));
    if (!loaded.config) {
      throw std::runtime_error("test config: " + loaded.errors.front().to_string("yaml"));
    }
    proxy::log::configure(loaded.config->logging);
    uv_loop_init(&loop_);
    deferred_delete_ = std::make_unique<proxy::DeferredDelete>(&loop_);
    std::vector<std::string_view> verbs;
    for (std::size_t verb = 0; verb < protocol::kPop3VerbCount; ++verb) {
      verbs.push_back(protocol::verb_name(static_cast<protocol::Pop3Verb>(verb)));
    }
    metrics_ = std::make_unique<metrics::Metrics>(registry_, std::vector<std::string>{"pop3"},
                                                  verbs, "test", "test", "test");
    auto settings = std::make_shared<proxy::Settings>();
    settings->config = std::move(*loaded.config);
    settings->identity = std::make_shared<proxy::Identity>();
    settings->make_store = FakeMailStore::factory(mailbox_);
    settings_ = settings;

    int server_fd = -1;
    connect_pair(server_fd, client_fd_);
    proxy::ConnectionPtr connection = proxy::Connection::create(&loop_, nullptr);
    uv_tcp_open(reinterpret_cast<uv_tcp_t*>(connection->stream()), server_fd);
    connection->configure_socket();
    connection_ = connection.get();
    proxy::SessionHost& host = *this;
    session_ = std::make_unique<proxy::Pop3Session>(
        host,
        proxy::SessionContext(&loop_, settings_, *metrics_, guard_, history_, nullptr, nullptr),
        settings_->config.listeners[0], 0, std::move(connection), 1);
    session_->start();
  }

  ~SessionHarness() {
    session_.reset();
    deferred_delete_.reset();
    if (client_fd_ >= 0) {
      ::close(client_fd_);
    }
    // Every handle is closing now (a connection may first finish a graceful close);
    // let libuv call back, then the loop can go.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (uv_loop_alive(&loop_) != 0 && std::chrono::steady_clock::now() < give_up) {
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    uv_loop_close(&loop_);
  }

  SessionHarness(const SessionHarness&) = delete;
  SessionHarness& operator=(const SessionHarness&) = delete;

  void send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t sent = ::send(client_fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EAGAIN) {
          turn();
          continue;
        }
        return;  // the session closed: what it answered is still readable
      }
      bytes.remove_prefix(static_cast<std::size_t>(sent));
    }
  }

  // Runs the loop until the client has received `needle` (or the connection closed, or
  // the deadline passed) and returns everything up to and including it.
  std::string read_until(std::string_view needle,
                         std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    const auto give_up = std::chrono::steady_clock::now() + deadline;
    std::size_t found = std::string::npos;
    while ((found = received_.find(needle)) == std::string::npos && !peer_closed_ &&
           std::chrono::steady_clock::now() < give_up) {
      turn();
    }
    const std::size_t end = found == std::string::npos ? received_.size() : found + needle.size();
    std::string taken = received_.substr(0, end);
    received_.erase(0, end);
    return taken;
  }
  // A command and its one-line answer.
  std::string command(std::string_view line) {
    send(std::string(line) + "\r\n");
    return read_until("\r\n");
  }
  // A command and its multi-line answer (or the -ERR line, or what came before a close).
  std::string multiline(std::string_view line) {
    send(std::string(line) + "\r\n");
    std::string first = read_until("\r\n");
    if (!first.starts_with("+OK")) {
      return first;
    }
    return first + read_until("\r\n.\r\n");
  }
  // Runs the loop until the session closed the client connection; false at the deadline.
  bool wait_closed(std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    return run_until([this] { return peer_closed_; }, deadline);
  }
  // Until the session has finished (connection closed and accounted for).
  bool wait_finished(std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    return run_until([this] { return finished_; }, deadline);
  }
  template <typename Condition>
  bool run_until(Condition condition, std::chrono::milliseconds deadline) {
    const auto give_up = std::chrono::steady_clock::now() + deadline;
    while (!condition()) {
      if (std::chrono::steady_clock::now() >= give_up) {
        return false;
      }
      turn();
    }
    return true;
  }
  // The client goes away at once (RST, not FIN).
  void reset_client() {
    linger abortive{1, 0};
    ::setsockopt(client_fd_, SOL_SOCKET, SO_LINGER, &abortive, sizeof(abortive));
    ::close(client_fd_);
    client_fd_ = -1;
    peer_closed_ = true;
  }
  // The client half-closes after its last command (QUIT then FIN, as scripts do).
  void shutdown_client() { ::shutdown(client_fd_, SHUT_WR); }

  bool finished() const { return finished_; }
  // What the session has queued for the client and the socket has not taken yet.
  std::size_t queued_to_client() const {
    return session_ && !finished_ ? connection_->pending_bytes() : 0;
  }
  bool peer_closed() const { return peer_closed_; }
  // Small kernel buffers on both ends (no autotuning): a client that stops reading holds
  // up the session after this many bytes or so, not after megabytes.
  void shrink_socket_buffers(int bytes) {
    uv_os_fd_t server_fd = -1;
    uv_fileno(reinterpret_cast<uv_handle_t*>(connection_->stream()), &server_fd);
    ::setsockopt(server_fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    ::setsockopt(client_fd_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  }
  const std::string& unread() const { return received_; }
  FakeMailbox& mailbox() { return *mailbox_; }
  // popbridge_commands_total for one verb: {ok, error}.
  std::pair<double, double> command_counts(protocol::Pop3Verb verb) {
    metrics::Metrics::Command& counters = metrics_->command(static_cast<std::size_t>(verb));
    return {counters.ok->Value(), counters.err->Value()};
  }
  metrics::Metrics& metrics() { return *metrics_; }
  uv_loop_t* loop() { return &loop_; }

  // Runs the loop while the client reads nothing (a slow client); false at the deadline.
  template <typename Condition>
  bool stall_until(Condition condition,
                   std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    const auto give_up = std::chrono::steady_clock::now() + deadline;
    while (!condition()) {
      if (std::chrono::steady_clock::now() >= give_up) {
        return false;
      }
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    return true;
  }

  // One loop turn, then whatever the client socket has.
  void turn() {
    uv_run(&loop_, UV_RUN_NOWAIT);
    if (client_fd_ < 0 || peer_closed_) {
      return;
    }
    pollfd readable{client_fd_, POLLIN, 0};
    // A short poll lets the kernel deliver what the loop just wrote.
    if (::poll(&readable, 1, 1) <= 0) {
      return;
    }
    char buffer[64 * 1024];
    const ssize_t got = ::recv(client_fd_, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (got > 0) {
      received_.append(buffer, static_cast<std::size_t>(got));
    } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
      peer_closed_ = true;
    }
  }

 private:
  void dispose(std::shared_ptr<void> object) override {
    proxy::DeferredDelete::of(&loop_).retire(std::move(object));
  }
  void session_finished(proxy::Pop3Session*) override { finished_ = true; }

  static void connect_pair(int& server_fd, int& client_fd) {
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listener, 1) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("loopback listener");
    }
    client_fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(client_fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
      throw std::runtime_error("loopback connect");
    }
    server_fd = ::accept(listener, nullptr, nullptr);
    ::close(listener);
    if (server_fd < 0) {
      throw std::runtime_error("loopback accept");
    }
    ::fcntl(client_fd, F_SETFL, ::fcntl(client_fd, F_GETFL) | O_NONBLOCK);
  }

  std::shared_ptr<FakeMailbox> mailbox_;
  uv_loop_t loop_{};
  std::unique_ptr<proxy::DeferredDelete> deferred_delete_;
  prometheus::Registry registry_;
  std::unique_ptr<metrics::Metrics> metrics_;
  proxy::SettingsPtr settings_;
  proxy::LoginGuard guard_;
  proxy::MailboxHistory history_;
  std::unique_ptr<proxy::Pop3Session> session_;
  proxy::Connection* connection_ = nullptr;  // the session's; valid while it lives
  int client_fd_ = -1;
  std::string received_;
  bool peer_closed_ = false;
  bool finished_ = false;
};

}  // namespace popbridge::testing
