// SPDX-License-Identifier: Apache-2.0
// The transport under both protocol clients: one blocking TCP connection, optionally with
// TLS from the first byte (POP3S, IMAPS), and the options every mode needs to open one.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace popbridge::bench {

struct Endpoint {
  std::string host;
  std::string port;
};

Endpoint parse_endpoint(const std::string& text);

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

// A client context. With a CA file the server certificate is verified (the name is
// checked in Stream::open); without one anything is accepted, which is enough on loopback.
SslCtxPtr make_tls_context(const std::string& ca_file);

// One blocking TCP connection, optionally with TLS from the first byte (POP3S, IMAPS),
// plus a read buffer that the protocol code consumes from its front.
class Stream {
 public:
  Stream(const Endpoint& endpoint, SSL_CTX* tls, const std::string& server_name, int timeout_s);
  ~Stream() { release(); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  void write_all(std::string_view data);

  // Unconsumed bytes already read.
  std::string_view buffered() const { return {buffer_.data() + begin_, end_ - begin_}; }
  void consume(std::size_t n) {
    begin_ += n;
    if (begin_ == end_) {
      begin_ = end_ = 0;
    }
  }
  void consume_all() { begin_ = end_ = 0; }

  // Appends at least one more byte to buffered(); throws at EOF, error or timeout. `what`
  // names the awaited reply for the message.
  void fill(const char* what);

  // One line without its line end (CRLF or LF).
  std::string read_line(const char* what);

  // Plaintext octets received so far (after TLS), for the wire-byte figure.
  std::uint64_t bytes_read() const { return bytes_read_; }

 private:
  // Large enough that a read returns as much as the kernel (or a TLS record) has.
  static constexpr std::size_t kBufferSize = 256 * 1024;

  void release();

  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::vector<char> buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::uint64_t bytes_read_ = 0;
};

// What every mode needs to reach a server.
struct ConnectOptions {
  std::string address;
  bool tls = false;
  std::string ca_file;
  std::string server_name = "localhost";
  std::string user;
  std::string password;
  int timeout_s = 120;
};

class Connector {
 public:
  explicit Connector(const ConnectOptions& options);
  std::unique_ptr<Stream> open() const;

 private:
  const ConnectOptions& options_;
  Endpoint endpoint_;
  SslCtxPtr tls_;
};

}  // namespace popbridge::bench
