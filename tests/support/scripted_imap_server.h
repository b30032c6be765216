// SPDX-License-Identifier: Apache-2.0
// A minimal IMAP server on 127.0.0.1 for unit tests of the upstream side: blocking sockets,
// one thread per connection, so that it answers while the test's own libuv loop is not
// running. It speaks just enough for a connection to log in and sit idle (greeting with
// capabilities, CAPABILITY, AUTHENTICATE PLAIN with SASL-IR, LOGIN, NOOP, LOGOUT) and lets
// the test drop every connection from the server's side, as a restart would.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace popbridge::testing {

class ScriptedImapServer {
 public:
  // What the server has seen, as one consistent reading.
  struct Counts {
    int open = 0;     // connections not yet closed by either side
    int logins = 0;   // AUTHENTICATE or LOGIN, each answered OK
    int logouts = 0;  // LOGOUT
  };

  ScriptedImapServer() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listener_, 16) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      if (listener_ >= 0) {
        ::close(listener_);
      }
      throw std::runtime_error("scripted IMAP server: no loopback socket");
    }
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~ScriptedImapServer() {
    stopping_ = true;
    acceptor_.join();
    drop_connections();
    for (std::thread& thread : sessions_) {
      thread.join();
    }
    ::close(listener_);
  }
  ScriptedImapServer(const ScriptedImapServer&) = delete;
  ScriptedImapServer& operator=(const ScriptedImapServer&) = delete;

  std::uint16_t port() const { return port_; }

  // Every open connection gets a FIN from the server's side; its thread then ends.
  void drop_connections() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int fd : open_) {
      ::shutdown(fd, SHUT_RDWR);
    }
  }

  Counts counts() {
    std::lock_guard<std::mutex> lock(mutex_);
    return counts_locked();
  }

  // Waits (without running anyone's loop) until the condition holds of the counts; false
  // at the deadline.
  bool wait_for(const std::function<bool(const Counts&)>& condition,
                std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, deadline, [&] { return condition(counts_locked()); });
  }

 private:
  static constexpr std::string_view kCapabilities = "IMAP4rev1 AUTH=PLAIN SASL-IR";

  Counts counts_locked() const { return {static_cast<int>(open_.size()), logins_, logouts_}; }

  void accept_loop() {
    while (!stopping_) {
      pollfd readable{listener_, POLLIN, 0};
      if (::poll(&readable, 1, 20) <= 0) {
        continue;  // the timeout only lets it see stopping_
      }
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        open_.insert(fd);
      }
      changed_.notify_all();
      sessions_.emplace_back([this, fd] { serve(fd); });
    }
  }

  static bool send_all(int fd, std::string_view text) {
    while (!text.empty()) {
      const ssize_t sent = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
      if (sent <= 0) {
        return false;
      }
      text.remove_prefix(static_cast<std::size_t>(sent));
    }
    return true;
  }

  // Answers one command line; false when the connection is to end.
  bool answer(int fd, std::string_view line) {
    const std::size_t space = line.find(' ');
    const std::string tag(line.substr(0, space));
    std::string verb(space == std::string_view::npos ? "" : line.substr(space + 1));
    verb = verb.substr(0, verb.find(' '));
    for (char& c : verb) {
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    if (verb == "CAPABILITY") {
      return send_all(fd,
                      "* CAPABILITY " + std::string(kCapabilities) + "\r\n" + tag + " OK done\r\n");
    }
    if (verb == "AUTHENTICATE" || verb == "LOGIN") {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++logins_;
      }
      changed_.notify_all();
      return send_all(fd,
                      tag + " OK [CAPABILITY " + std::string(kCapabilities) + "] Logged in\r\n");
    }
    if (verb == "NOOP") {
      return send_all(fd, tag + " OK done\r\n");
    }
    if (verb == "LOGOUT") {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++logouts_;
      }
      changed_.notify_all();
      send_all(fd, "* BYE bye\r\n" + tag + " OK done\r\n");
      return false;
    }
    return send_all(fd, tag + " BAD not scripted\r\n");
  }

  void serve(int fd) {
    std::string buffer;
    bool open = send_all(fd, "* OK [CAPABILITY " + std::string(kCapabilities) + "] ready\r\n");
    while (open) {
      char chunk[4096];
      const ssize_t got = ::recv(fd, chunk, sizeof(chunk), 0);
      if (got <= 0) {
        break;
      }
      buffer.append(chunk, static_cast<std::size_t>(got));
      for (std::size_t end = buffer.find("\r\n"); open && end != std::string::npos;
           end = buffer.find("\r\n")) {
        const std::string line = buffer.substr(0, end);
        buffer.erase(0, end + 2);
        open = answer(fd, line);
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_.erase(fd);
      ::close(fd);  // under the lock: drop_connections never shuts down a reused number
    }
    changed_.notify_all();
  }

  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::vector<std::thread> sessions_;  // touched by the acceptor thread, then the destructor
  std::mutex mutex_;
  std::condition_variable changed_;
  std::set<int> open_;
  int logins_ = 0;
  int logouts_ = 0;
};

}  // namespace popbridge::testing
