// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/byte_relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

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
  const int fd = socket(found->ai_family, SOCK_STREAM, 0);
  const bool connected = fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0;
  freeaddrinfo(found);
  if (!connected) {
    throw Failure(std::string("relay: cannot connect: ") + std::strerror(errno));
  }
  return fd;
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

// One side of a relayed connection: its socket and, for TLS, an engine over memory BIOs,
// so ciphertext moves in the gateway's read size and sealed records leave together in one
// write, as the gateway does (an engine on the socket itself reads each record in two
// system calls and writes each in one).
class Side {
 public:
  explicit Side(int fd) : socket_(fd) {}

  // A blocking handshake, then the socket turns non-blocking.
  bool start_tls(SSL_CTX* context, bool server) {
    tls_.reset(SSL_new(context));
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    if (!tls_ || in == nullptr || out == nullptr) {
      BIO_free(in);
      BIO_free(out);
      return false;
    }
    SSL_set_bio(tls_.get(), in, out);
    if (server) {
      SSL_set_accept_state(tls_.get());
    } else {
      SSL_set_connect_state(tls_.get());
    }
    std::array<char, kReadSize> ciphertext;
    for (;;) {
      const int result = SSL_do_handshake(tls_.get());
      if (!send_sealed()) {
        return false;
      }
      if (result == 1) {
        break;
      }
      if (SSL_get_error(tls_.get(), result) != SSL_ERROR_WANT_READ) {
        return false;
      }
      const ssize_t n = read(socket_.fd(), ciphertext.data(), ciphertext.size());
      if (n <= 0 || BIO_write(SSL_get_rbio(tls_.get()), ciphertext.data(), static_cast<int>(n)) !=
                        static_cast<int>(n)) {
        return false;
      }
    }
    return true;
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

  // Up to `size` octets of what has arrived (for TLS, decrypted); 0 if nothing yet,
  // -1 once the peer closed or failed.
  ssize_t receive(char* buffer, std::size_t size) {
    if (!tls_) {
      const ssize_t n = read(socket_.fd(), buffer, size);
      return n > 0 ? n : (n < 0 && errno == EAGAIN ? 0 : -1);
    }
    std::size_t filled = 0;
    for (;;) {
      const int n = SSL_read(tls_.get(), buffer + filled, static_cast<int>(size - filled));
      if (n > 0) {
        filled += static_cast<std::size_t>(n);
        if (filled == size) {
          return static_cast<ssize_t>(filled);
        }
        continue;
      }
      if (SSL_get_error(tls_.get(), n) != SSL_ERROR_WANT_READ) {
        return filled > 0 ? static_cast<ssize_t>(filled) : -1;
      }
      if (ciphertext_drained_) {
        ciphertext_drained_ = false;
        return static_cast<ssize_t>(filled);
      }
      // The engine wants more: one socket read, then decrypt again.
      std::array<char, kReadSize> ciphertext;
      const ssize_t got = read(socket_.fd(), ciphertext.data(), ciphertext.size());
      if (got <= 0) {
        if (got < 0 && errno == EAGAIN) {
          return static_cast<ssize_t>(filled);
        }
        return filled > 0 ? static_cast<ssize_t>(filled) : -1;
      }
      BIO_write(SSL_get_rbio(tls_.get()), ciphertext.data(), static_cast<int>(got));
      ciphertext_drained_ = static_cast<std::size_t>(got) < ciphertext.size();
    }
  }

  bool send(const char* data, std::size_t size) {
    if (!tls_) {
      return write_all(socket_.fd(), data, size);
    }
    return SSL_write(tls_.get(), data, static_cast<int>(size)) == static_cast<int>(size) &&
           send_sealed();
  }

 private:
  bool send_sealed() {
    BIO* out = SSL_get_wbio(tls_.get());
    char* sealed = nullptr;
    const long size = BIO_get_mem_data(out, &sealed);
    if (size <= 0) {
      return true;
    }
    const bool sent = write_all(socket_.fd(), sealed, static_cast<std::size_t>(size));
    BIO_reset(out);
    return sent;
  }

  Socket socket_;
  SslPtr tls_;
  // The last socket read took all there was: after decrypting it, wait for the next wake.
  bool ciphertext_drained_ = false;
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
  End ends[2];
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

// Accepts one connection and opens its server side, TLS where asked.
std::unique_ptr<Relayed> accept_relayed(int listener, const Endpoint& endpoint,
                                        const RelayOptions& options) {
  const int client = accept(listener, nullptr, nullptr);
  if (client < 0) {
    return nullptr;
  }
  auto each = std::make_unique<Relayed>(client, connect_to(endpoint));
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
      for (const auto& each : relayed) {
        relay_what_came(each->ends[1]);  // less than a large read, a millisecond old
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
      }
    }
  }
}

}  // namespace popbridge::bench
