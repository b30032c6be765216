// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/connection.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "tests/bench/bench_client/failure.h"

namespace popbridge::bench {
namespace {

std::string tls_errors() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!text.empty()) {
      text += "; ";
    }
    text += buffer;
  }
  return text.empty() ? "no TLS error queued" : text;
}

}  // namespace

Endpoint parse_endpoint(const std::string& text) {
  const std::size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    throw Failure("expected HOST:PORT, got \"" + text + "\"");
  }
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return {host, text.substr(colon + 1)};
}

SslCtxPtr make_tls_context(const std::string& ca_file) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx || !SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION)) {
    throw Failure("SSL_CTX_new: " + tls_errors());
  }
  if (!ca_file.empty()) {
    if (!SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr)) {
      throw Failure("cannot load CA file " + ca_file + ": " + tls_errors());
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  }
  return ctx;
}

Stream::Stream(const Endpoint& endpoint, SSL_CTX* tls, const std::string& server_name,
               int timeout_s)
    : buffer_(kBufferSize) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(endpoint.host.c_str(), endpoint.port.c_str(), &hints, &found);
      rc != 0) {
    throw Failure("cannot resolve " + endpoint.host + ": " + gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> addresses(found, freeaddrinfo);
  int last_error = 0;
  for (addrinfo* a = found; a != nullptr && fd_ < 0; a = a->ai_next) {
    fd_ = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd_ < 0) {
      last_error = errno;
      continue;
    }
    if (connect(fd_, a->ai_addr, a->ai_addrlen) != 0) {
      last_error = errno;
      close(fd_);
      fd_ = -1;
    }
  }
  if (fd_ < 0) {
    throw Failure("cannot connect to " + endpoint.host + ":" + endpoint.port + ": " +
                  errno_text(last_error));
  }
  const int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // A server that stops sending makes recv fail with EAGAIN after this long.
  timeval timeout{};
  timeout.tv_sec = timeout_s;
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  if (tls != nullptr) {
    ssl_ = SSL_new(tls);
    if (ssl_ == nullptr || !SSL_set_fd(ssl_, fd_) ||
        !SSL_set_tlsext_host_name(ssl_, server_name.c_str()) ||
        !SSL_set1_host(ssl_, server_name.c_str())) {
      const std::string why = tls_errors();
      release();
      throw Failure("TLS set-up failed: " + why);
    }
    if (SSL_connect(ssl_) != 1) {
      const std::string why = tls_errors();
      const long verify = SSL_get_verify_result(ssl_);
      release();
      throw Failure(
          "TLS handshake with " + endpoint.host + ":" + endpoint.port + " failed: " + why +
          (verify != X509_V_OK
               ? std::string(" (certificate: ") + X509_verify_cert_error_string(verify) + ")"
               : std::string()));
    }
  }
}

void Stream::write_all(std::string_view data) {
  while (!data.empty()) {
    ssize_t n;
    if (ssl_ != nullptr) {
      n = SSL_write(ssl_, data.data(),
                    static_cast<int>(std::min<std::size_t>(data.size(), 1 << 20)));
      if (n <= 0) {
        throw Failure("TLS write failed: " + tls_errors());
      }
    } else {
      n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        throw Failure("write failed: " + errno_text(errno));
      }
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

void Stream::fill(const char* what) {
  if (begin_ > 0 && end_ == buffer_.size()) {
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ == buffer_.size()) {
    throw Failure(std::string("line too long while waiting for ") + what);
  }
  char* into = buffer_.data() + end_;
  const std::size_t room = buffer_.size() - end_;
  for (;;) {
    ssize_t n;
    if (ssl_ != nullptr) {
      errno = 0;  // SSL_ERROR_SYSCALL leaves errno as the failed call set it, or 0 at EOF
      n = SSL_read(ssl_, into, static_cast<int>(std::min<std::size_t>(room, 1 << 30)));
      if (n <= 0) {
        const int error = SSL_get_error(ssl_, static_cast<int>(n));
        if (error == SSL_ERROR_SYSCALL && errno == EINTR) {
          continue;
        }
        if (error == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          throw Failure(std::string("timed out waiting for ") + what);
        }
        if (error == SSL_ERROR_ZERO_RETURN || (error == SSL_ERROR_SYSCALL && errno == 0)) {
          throw Failure(std::string("connection closed while waiting for ") + what);
        }
        throw Failure(std::string("TLS read failed while waiting for ") + what + ": " +
                      tls_errors() + " (" + errno_text(errno) + ")");
      }
    } else {
      n = recv(fd_, into, room, 0);
      if (n == 0) {
        throw Failure(std::string("connection closed while waiting for ") + what);
      }
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          throw Failure(std::string("timed out waiting for ") + what);
        }
        throw Failure(std::string("read failed while waiting for ") + what + ": " +
                      errno_text(errno));
      }
    }
    end_ += static_cast<std::size_t>(n);
    bytes_read_ += static_cast<std::uint64_t>(n);
    return;
  }
}

std::string Stream::read_line(const char* what) {
  for (std::size_t scanned = 0;;) {
    const std::string_view have = buffered();
    const std::size_t lf = have.find('\n', scanned);
    if (lf != std::string_view::npos) {
      std::string line(have.substr(0, lf));
      if (!line.empty() && line.back() == '\r') {
        line.pop_back();
      }
      consume(lf + 1);
      return line;
    }
    scanned = have.size();
    fill(what);
  }
}

void Stream::release() {
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

Connector::Connector(const ConnectOptions& options)
    : options_(options), endpoint_(parse_endpoint(options.address)) {
  if (options.tls) {
    tls_ = make_tls_context(options.ca_file);
  }
}

std::unique_ptr<Stream> Connector::open() const {
  return std::make_unique<Stream>(endpoint_, tls_.get(), options_.server_name, options_.timeout_s);
}

}  // namespace popbridge::bench
