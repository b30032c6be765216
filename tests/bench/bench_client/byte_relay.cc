// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/byte_relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/net/tls_transport.h"
#include "tests/bench/bench_client/connection.h"
#include "tests/bench/bench_client/failure.h"

namespace popbridge::bench {
namespace {

constexpr std::size_t kReadSize = 64 * 1024;  // the gateway's read size

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

struct SslDeleter {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

int connect_to(const Endpoint& endpoint) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(endpoint.host.c_str(), endpoint.port.c_str(), &hints, &found) != 0) {
    throw Failure("relay: cannot resolve " + endpoint.host);
  }
  Socket connection(socket(found->ai_family, SOCK_STREAM, 0));
  const bool connected =
      connection.fd() >= 0 && connect(connection.fd(), found->ai_addr, found->ai_addrlen) == 0;
  freeaddrinfo(found);
  if (!connected) {
    throw Failure(std::string("relay: cannot connect: ") + std::strerror(errno));
  }
  return connection.release();
}

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n > 0) {
      data += n;
      size -= static_cast<std::size_t>(n);
      continue;
    }
    pollfd writable{fd, POLLOUT, 0};
    if (n == 0 || errno != EAGAIN || poll(&writable, 1, -1) != 1) {
      return false;
    }
  }
  return true;
}

// One side of a relayed connection: its socket and, for TLS, an engine on the gateway's own
// transport (proxy/net/tls_transport.h), which decrypts straight from the bytes read and
// appends sealed records to one output buffer, written at once. Memory BIOs would make
// the relay do work the gateway does not (a memmove per record), and the engine on the
// socket itself reads each record in two system calls.
class Side {
 public:
  explicit Side(int fd) : socket_(fd) { transport_.ciphertext_out = &sealed_; }

  // A blocking handshake; the socket turns non-blocking afterwards (make_non_blocking).
  bool start_tls(SSL_CTX* context, bool server) {
    tls_.reset(SSL_new(context));
    ciphertext_.resize(kReadSize);
    if (!tls_ || !proxy::attach_tls_transport(tls_.get(), &transport_)) {
      return false;
    }
    if (server) {
      SSL_set_accept_state(tls_.get());
    } else {
      SSL_set_connect_state(tls_.get());
    }
    for (;;) {
      transport_.ciphertext_in = unread_;
      const int result = SSL_do_handshake(tls_.get());
      unread_ = std::exchange(transport_.ciphertext_in, {});
      if (!send_sealed()) {
        return false;
      }
      if (result == 1) {
        return true;
      }
      if (SSL_get_error(tls_.get(), result) != SSL_ERROR_WANT_READ || !read_ciphertext()) {
        return false;
      }
    }
  }

  void make_non_blocking() {
    fcntl(socket_.fd(), F_SETFL, fcntl(socket_.fd(), F_GETFL) | O_NONBLOCK);
    const int one = 1;
    setsockopt(socket_.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }

  void wake_for_large_reads() {
    const int watermark = static_cast<int>(kReadSize);
    setsockopt(socket_.fd(), SOL_SOCKET, SO_RCVLOWAT, &watermark, sizeof(watermark));
  }

  int fd() const { return socket_.fd(); }
  // Ciphertext read past the handshake's end: no wake-up will bring it.
  bool holds_ciphertext() const { return !unread_.empty(); }

  // Up to `size` octets of what has arrived (for TLS, decrypted); 0 if nothing yet,
  // -1 once the peer closed or failed.
  ssize_t receive(char* buffer, std::size_t size) {
    if (!tls_) {
      const ssize_t n = read(socket_.fd(), buffer, size);
      return n > 0 ? n : (n < 0 && errno == EAGAIN ? 0 : -1);
    }
    std::size_t filled = 0;
    while (filled < size) {
      transport_.ciphertext_in = unread_;
      const int n = SSL_read(tls_.get(), buffer + filled, static_cast<int>(size - filled));
      unread_ = std::exchange(transport_.ciphertext_in, {});
      if (n > 0) {
        filled += static_cast<std::size_t>(n);
        continue;
      }
      if (SSL_get_error(tls_.get(), n) != SSL_ERROR_WANT_READ) {
        return filled > 0 ? static_cast<ssize_t>(filled) : -1;
      }
      if (drained_) {
        drained_ = false;  // the last read took all there was: wait for the next wake-up
        break;
      }
      if (!read_ciphertext()) {
        return filled > 0 ? static_cast<ssize_t>(filled) : (errno == EAGAIN ? 0 : -1);
      }
    }
    return static_cast<ssize_t>(filled);
  }

  bool send(const char* data, std::size_t size) {
    if (!tls_) {
      return write_all(socket_.fd(), data, size);
    }
    return SSL_write(tls_.get(), data, static_cast<int>(size)) == static_cast<int>(size) &&
           send_sealed();
  }

 private:
  // One socket read into the side's ciphertext buffer (the engine has taken all before).
  bool read_ciphertext() {
    const ssize_t n = read(socket_.fd(), ciphertext_.data(), ciphertext_.size());
    if (n <= 0) {
      if (n == 0) {
        errno = 0;  // closed, not "would block"
      }
      return false;
    }
    unread_ = std::string_view(ciphertext_.data(), static_cast<std::size_t>(n));
    drained_ = static_cast<std::size_t>(n) < ciphertext_.size();
    return true;
  }

  bool send_sealed() {
    const bool sent = sealed_.empty() || write_all(socket_.fd(), sealed_.data(), sealed_.size());
    sealed_.clear();
    return sent;
  }

  Socket socket_;
  // The transport and its output outlive the engine (declared before it).
  proxy::TlsTransport transport_;
  std::string sealed_;
  SslPtr tls_;
  std::vector<char> ciphertext_;  // TLS only
  std::string_view unread_;       // of ciphertext_, not yet taken by the engine
  bool drained_ = false;
};

// A client's connection and the one made for it to the server; each end knows where what
// it reads goes.
struct Relayed {
  struct End {
    Relayed* pair;
    Side* from;
    Side* to;
  };
  Relayed(int client_fd, int server_fd)
      : client(client_fd),
        server(server_fd),
        ends{End{this, &client, &server}, End{this, &server, &client}} {}
  Relayed(const Relayed&) = delete;
  Relayed& operator=(const Relayed&) = delete;
  Side client;
  Side server;
  std::array<End, 2> ends;
  bool done = false;
};

SSL_CTX* server_context(const RelayOptions& options) {
  static SSL_CTX* const context = [&] {
    SSL_CTX* made = SSL_CTX_new(TLS_method());
    if (made == nullptr ||
        SSL_CTX_use_certificate_chain_file(made, options.certificate_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(made, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      throw Failure("relay: cannot load " + options.certificate_file + " and " + options.key_file);
    }
    return made;
  }();
  return context;
}

SSL_CTX* client_context() {
  static SSL_CTX* const context = SSL_CTX_new(TLS_method());  // loopback: no verification
  return context;
}

// Accepts one connection and opens its server side, TLS where asked. Blocking, on the
// relay's one thread: on loopback a connect and a handshake take well under a millisecond.
// A connection that cannot be relayed is dropped, and the relay goes on.
std::unique_ptr<Relayed> accept_relayed(int listener, const Endpoint& endpoint,
                                        const RelayOptions& options) {
  Socket client(accept(listener, nullptr, nullptr));
  if (client.fd() < 0) {
    return nullptr;
  }
  std::unique_ptr<Relayed> each;
  try {
    const int server = connect_to(endpoint);  // first: a throw leaves the client owned
    each = std::make_unique<Relayed>(client.release(), server);
  } catch (const Failure& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return nullptr;
  }
  if ((!options.certificate_file.empty() &&
       !each->client.start_tls(server_context(options), true)) ||
      (options.tls_to && !each->server.start_tls(client_context(), false))) {
    std::fprintf(stderr, "relay: TLS handshake failed\n");
    return nullptr;
  }
  each->client.make_non_blocking();
  each->server.make_non_blocking();
  if (options.large_reads) {
    each->server.wake_for_large_reads();
  }
  return each;
}

}  // namespace

int run_byte_relay(const RelayOptions& options) {
  const Endpoint endpoint = parse_endpoint(options.target);
  Socket listener(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (listener.fd() < 0 ||
      bind(listener.fd(), reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      listen(listener.fd(), 256) != 0 ||
      getsockname(listener.fd(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw Failure(std::string("relay: cannot listen: ") + std::strerror(errno));
  }
  std::printf("relay %u\n", ntohs(address.sin_port));
  std::fflush(stdout);

  // One thread (its CPU is the process's, read exactly from schedstat) and epoll, as the
  // gateway: read what is there, write it whole. Requests are small and the benchmark's
  // clients read all they are sent, so waiting to write does not hold others up for long.
  Socket poller(epoll_create1(0));
  epoll_event listening{EPOLLIN, {.ptr = nullptr}};
  if (poller.fd() < 0 || epoll_ctl(poller.fd(), EPOLL_CTL_ADD, listener.fd(), &listening) != 0) {
    throw Failure(std::string("relay: epoll: ") + std::strerror(errno));
  }
  std::array<char, kReadSize> buffer;
  std::array<epoll_event, 64> ready;
  std::vector<std::unique_ptr<Relayed>> relayed;
  const auto relay_what_came = [&buffer](Relayed::End& end) {
    for (ssize_t n = 1; n > 0 && !end.pair->done;) {
      n = end.from->receive(buffer.data(), buffer.size());
      end.pair->done =
          n < 0 || (n > 0 && !end.to->send(buffer.data(), static_cast<std::size_t>(n)));
      if (n < static_cast<ssize_t>(buffer.size())) {
        break;  // all there was
      }
    }
  };
  for (;;) {
    const bool short_wait = options.large_reads && !relayed.empty();
    const int count = epoll_wait(poller.fd(), ready.data(), ready.size(), short_wait ? 1 : -1);
    if (count == 0) {
      // No socket had a large read (or anything) for a millisecond, all connections
      // together: take what the servers' sides hold, less than a large read.
      for (const auto& each : relayed) {
        relay_what_came(each->ends[1]);
      }
    }
    bool accept_one = false;
    for (int i = 0; i < count; ++i) {
      auto* end = static_cast<Relayed::End*>(ready[i].data.ptr);
      if (end == nullptr) {
        accept_one = true;
        continue;
      }
      relay_what_came(*end);
    }
    std::erase_if(relayed, [](const auto& each) { return each->done; });  // closes: unwatched
    if (accept_one) {
      if (auto each = accept_relayed(listener.fd(), endpoint, options)) {
        for (Relayed::End& end : each->ends) {
          epoll_event event{EPOLLIN, {.ptr = &end}};
          epoll_ctl(poller.fd(), EPOLL_CTL_ADD, end.from->fd(), &event);
        }
        relayed.push_back(std::move(each));
        for (Relayed::End& end : relayed.back()->ends) {
          if (end.from->holds_ciphertext()) {
            relay_what_came(end);
          }
        }
      }
    }
  }
}

}  // namespace popbridge::bench
