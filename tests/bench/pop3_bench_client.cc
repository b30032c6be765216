// SPDX-License-Identifier: Apache-2.0
// pop3_bench_client: the client side of tests/bench/run_bench.py.
//
// A small blocking POP3 and IMAP client. It measures how fast a message comes through the
// gateway (retr) against a direct IMAP fetch of the same message from the same upstream
// (imap-fetch), and holds many authenticated POP3 sessions open (idle-sessions) so the
// runner can read the gateway's memory. Blocking sockets keep it simple: the client is
// not what is measured, it only has to be much faster than the gateway, and a read
// timeout turns a stalled server into an error message instead of a hang.
//
// Every retrieval mode first fetches the message once untimed, hashing the octets a mail
// client would store (dot-unstuffed for POP3, the literal for IMAP), so the runner can
// check the gateway delivers the right bytes; that run also warms the upstream's caches
// for both paths alike. The timed runs only count octets.
//
// Results go to stdout as one "key=value ..." line, parsed by run_bench.py.
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "protocol/imap/imap_parser.h"
#include "protocol/imap/imap_writer.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace protocol = popbridge::protocol;

// Any failure ends the run with a message on stderr and status 1; the runner shows it.
class Failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string errno_text(int error) { return std::strerror(error); }

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

struct Endpoint {
  std::string host;
  std::string port;
};

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

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

// A client context. With a CA file the server certificate is verified (the name is
// checked in Stream::open); without one anything is accepted, which is enough on loopback.
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

// One blocking TCP connection, optionally with TLS from the first byte (POP3S, IMAPS),
// plus a read buffer that the protocol code consumes from its front.
class Stream {
 public:
  Stream(const Endpoint& endpoint, SSL_CTX* tls, const std::string& server_name, int timeout_s)
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
  ~Stream() { release(); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  void write_all(std::string_view data) {
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
  void fill(const char* what) {
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

  // One line without its line end (CRLF or LF).
  std::string read_line(const char* what) {
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

  // Plaintext octets received so far (after TLS), for the wire-byte figure.
  std::uint64_t bytes_read() const { return bytes_read_; }

 private:
  // Large enough that a read returns as much as the kernel (or a TLS record) has.
  static constexpr std::size_t kBufferSize = 256 * 1024;

  void release() {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    if (fd_ >= 0) {
      close(fd_);
      fd_ = -1;
    }
  }

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
  explicit Connector(const ConnectOptions& options)
      : options_(options), endpoint_(parse_endpoint(options.address)) {
    if (options.tls) {
      tls_ = make_tls_context(options.ca_file);
    }
  }
  std::unique_ptr<Stream> open() const {
    return std::make_unique<Stream>(endpoint_, tls_.get(), options_.server_name,
                                    options_.timeout_s);
  }

 private:
  const ConnectOptions& options_;
  Endpoint endpoint_;
  SslCtxPtr tls_;
};

std::string hex(const std::uint8_t* data, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 0xf];
  }
  return out;
}

// Counts (and optionally hashes) the octets of one retrieved message.
class Digest {
 public:
  explicit Digest(bool hashing) : hashing_(hashing) {
    EVP_DigestInit_ex(sha_.get(), EVP_sha256(), nullptr);
  }
  void add(std::string_view data) {
    octets_ += data.size();
    if (hashing_) {
      EVP_DigestUpdate(sha_.get(), data.data(), data.size());
    }
  }
  std::uint64_t octets() const { return octets_; }
  std::string finish() {
    if (!hashing_) {
      return {};
    }
    std::uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(sha_.get(), digest, &length);
    return hex(digest, length);
  }

 private:
  bool hashing_;
  struct Free {
    void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
  };
  std::unique_ptr<EVP_MD_CTX, Free> sha_{EVP_MD_CTX_new()};
  std::uint64_t octets_ = 0;
};

// Reads a POP3 multi-line body up to its terminating ".\r\n" (RFC 1939 §3), removing
// the byte-stuffing. Scanning is per line with memchr, so it runs far faster than any
// server can send. A line that starts with "." loses that dot; ".\r\n" ends the body.
class MultilineReader {
 public:
  explicit MultilineReader(Digest& digest) : digest_(digest) {}

  // Consumes from `data` up to the end of the body; returns how many octets were used
  // (the rest belongs to the next reply). done() tells whether the terminator was seen.
  std::size_t feed(std::string_view data) {
    const char* const begin = data.data();
    const char* const end = begin + data.size();
    const char* p = begin;
    const char* span = begin;  // first octet not yet handed to the digest
    while (p < end && !done_) {
      switch (state_) {
        case State::kInLine: {
          const void* lf = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
          if (lf == nullptr) {
            p = end;
          } else {
            p = static_cast<const char*>(lf) + 1;
            state_ = State::kLineStart;
          }
          break;
        }
        case State::kLineStart:
          if (*p == '.') {
            digest_.add({span, static_cast<std::size_t>(p - span)});
            ++p;
            span = p;  // the dot is either stuffing or part of the terminator
            state_ = State::kDot;
          } else {
            state_ = State::kInLine;
          }
          break;
        case State::kDot:
          if (*p == '\r') {
            ++p;
            span = p;  // held back: ".\r" may be the start of the terminator
            state_ = State::kDotCr;
          } else {
            ++stuffed_;
            state_ = State::kInLine;
          }
          break;
        case State::kDotCr:
          if (*p == '\n') {
            ++p;
            span = p;
            done_ = true;
          } else {
            // ".\r" then something else: not a terminator; keep the CR (dot dropped).
            digest_.add("\r");
            ++stuffed_;
            state_ = State::kInLine;
          }
          break;
      }
    }
    if (!done_) {
      digest_.add({span, static_cast<std::size_t>(end - span)});
    }
    return static_cast<std::size_t>(p - begin);
  }
  bool done() const { return done_; }
  std::uint64_t stuffed() const { return stuffed_; }

 private:
  enum class State { kLineStart, kInLine, kDot, kDotCr };
  Digest& digest_;
  // The status line's CRLF was just read, so the body starts at a line start.
  State state_ = State::kLineStart;
  bool done_ = false;
  std::uint64_t stuffed_ = 0;
};

// ---------------------------------------------------------------------------- POP3

class Pop3Client {
 public:
  explicit Pop3Client(std::unique_ptr<Stream> stream) : stream_(std::move(stream)) {}

  void read_greeting() { expect_ok(stream_->read_line("the POP3 greeting"), "greeting"); }
  void send(std::string_view command) {
    std::string line(command);
    line += "\r\n";
    stream_->write_all(line);
  }
  // Reads a single-line reply and fails unless it is +OK. `what` names the command (never
  // the password, which is why it is not derived from the command line).
  std::string reply(const char* what) {
    std::string line = stream_->read_line(what);
    expect_ok(line, what);
    return line;
  }
  std::string command(std::string_view command, const char* what) {
    send(command);
    return reply(what);
  }
  void login(const std::string& user, const std::string& password) {
    command("USER " + user, "USER");
    command("PASS " + password, "PASS");
  }
  // RETR n: returns the digest of the unstuffed body.
  void retr(unsigned message, Digest& digest) {
    command("RETR " + std::to_string(message), "RETR");
    MultilineReader body(digest);
    for (;;) {
      const std::size_t used = body.feed(stream_->buffered());
      stream_->consume(used);
      if (body.done()) {
        return;
      }
      stream_->fill("the rest of the RETR body");
    }
  }
  // A multi-line reply without body transparency concerns (UIDL, LIST): returns its lines.
  unsigned listing(std::string_view command, const char* what) {
    this->command(command, what);
    unsigned lines = 0;
    for (;;) {
      const std::string line = stream_->read_line(what);
      if (line == ".") {
        return lines;
      }
      ++lines;
    }
  }
  Stream& stream() { return *stream_; }

 private:
  static void expect_ok(const std::string& line, const char* what) {
    if (line.rfind("+OK", 0) != 0) {
      throw Failure(std::string(what) + " failed: " + line);
    }
  }
  std::unique_ptr<Stream> stream_;
};

// ---------------------------------------------------------------------------- IMAP

// Collects what the benchmark needs from our own response parser: the tagged status
// that ends a command, continuations, and the BODY[] literal.
class ImapHandler : public protocol::ImapEvents {
 public:
  void on_status(const protocol::ImapStatus& status) override {
    if (status.tag == "*") {
      if (status.kind == protocol::ImapStatusKind::kBye) {
        bye_ = std::string(status.text);
      }
      greeted_ = true;
      return;
    }
    tagged_ = true;
    tag_ = std::string(status.tag);
    ok_ = status.kind == protocol::ImapStatusKind::kOk;
    text_ = std::string(status.text);
  }
  void on_continuation(std::string_view) override { continuation_ = true; }
  void on_capability(const std::vector<std::string_view>&) override {}
  void on_exists(std::uint32_t) override {}
  void on_expunge(std::uint32_t) override {}
  void on_fetch_begin(std::uint32_t) override {}
  void on_fetch_uid(std::uint32_t uid) override {
    if (collect_uids_) {
      uids_.push_back(uid);
    }
  }
  void on_fetch_size(std::uint64_t) override {}
  void on_body_begin(std::string_view, std::uint64_t, std::uint64_t size) override {
    literal_size_ = size;
    ++bodies_;
  }
  void on_body_data(std::string_view chunk) override {
    if (digest_ != nullptr) {
      digest_->add(chunk);
    }
  }
  void on_body_end() override {}
  void on_fetch_end() override {}

  void expect(Digest* digest) {
    tagged_ = false;
    continuation_ = false;
    digest_ = digest;
    bodies_ = 0;
  }

  bool greeted_ = false;
  bool tagged_ = false;
  bool continuation_ = false;
  bool ok_ = false;
  std::string tag_;
  std::string text_;
  std::string bye_;
  Digest* digest_ = nullptr;
  std::uint64_t literal_size_ = 0;
  unsigned bodies_ = 0;
  bool collect_uids_ = false;
  std::vector<std::uint32_t> uids_;
};

class ImapClient {
 public:
  explicit ImapClient(std::unique_ptr<Stream> stream)
      : stream_(std::move(stream)), parser_(handler_) {}

  void read_greeting() {
    while (!handler_.greeted_) {
      pump("the IMAP greeting");
    }
    if (!handler_.bye_.empty()) {
      throw Failure("IMAP server said BYE: " + handler_.bye_);
    }
  }

  // Sends one command built with our own command writer, waiting for the continuation
  // before each synchronising literal, and reads up to its tagged reply.
  void run(const protocol::ImapCommand& command, const char* what, Digest* digest = nullptr) {
    const std::string tag = "b" + std::to_string(++tag_counter_);
    const std::vector<std::string> parts = command.render(tag, /*literal_plus=*/false);
    handler_.expect(digest);
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (i > 0) {
        while (!handler_.continuation_ && !handler_.tagged_) {
          pump(what);
        }
        if (handler_.tagged_) {
          break;  // refused before the literal was sent
        }
        handler_.continuation_ = false;
      }
      stream_->write_all(parts[i]);
    }
    while (!handler_.tagged_) {
      pump(what);
    }
    if (handler_.tag_ != tag || !handler_.ok_) {
      throw Failure(std::string(what) + " failed: " + handler_.tag_ + " " + handler_.text_);
    }
  }

  // UID FETCH 1:* (UID RFC822.SIZE): the UIDs of the selected mailbox, in order.
  std::vector<std::uint32_t> list_uids() {
    handler_.uids_.clear();
    handler_.collect_uids_ = true;
    run(protocol::ImapCommand("UID FETCH").raw("1:*").raw("(UID RFC822.SIZE)"), "UID FETCH 1:*");
    handler_.collect_uids_ = false;
    std::vector<std::uint32_t> uids = std::move(handler_.uids_);
    std::sort(uids.begin(), uids.end());
    return uids;
  }

  std::uint64_t last_literal_size() const { return handler_.literal_size_; }
  unsigned last_bodies() const { return handler_.bodies_; }
  Stream& stream() { return *stream_; }

 private:
  void pump(const char* what) {
    if (stream_->buffered().empty()) {
      stream_->fill(what);
    }
    const std::string_view data = stream_->buffered();
    const bool ok = parser_.feed(data);
    stream_->consume_all();
    if (!ok) {
      throw Failure(std::string("IMAP parse error while waiting for ") + what + ": " +
                    parser_.error());
    }
  }

  std::unique_ptr<Stream> stream_;
  ImapHandler handler_;
  protocol::ImapParser parser_;
  unsigned tag_counter_ = 0;
};

// ------------------------------------------------------------------------- results

struct Timing {
  std::uint64_t octets = 0;      // message octets over all timed runs
  std::uint64_t wire_bytes = 0;  // plaintext octets read over all timed runs
  double seconds = 0;
  double best_seconds = 0;
};

void print_result(const char* mode, unsigned repeat, std::uint64_t message_octets,
                  const std::string& sha256, const Timing& timing) {
  const double mb = 1e6;
  const double rate = timing.seconds > 0 ? timing.octets / mb / timing.seconds : 0;
  const double best = timing.best_seconds > 0 ? message_octets / mb / timing.best_seconds : 0;
  std::printf(
      "mode=%s repeat=%u message_octets=%llu sha256=%s octets=%llu wire_bytes=%llu "
      "seconds=%.6f mb_per_s=%.2f best_mb_per_s=%.2f\n",
      mode, repeat, static_cast<unsigned long long>(message_octets), sha256.c_str(),
      static_cast<unsigned long long>(timing.octets),
      static_cast<unsigned long long>(timing.wire_bytes), timing.seconds, rate, best);
  std::fflush(stdout);
}

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void add_run(Timing& timing, double seconds) {
  timing.seconds += seconds;
  if (timing.best_seconds == 0 || seconds < timing.best_seconds) {
    timing.best_seconds = seconds;
  }
}

// ---------------------------------------------------------------------------- modes

// Runs `once` repeat times into a non-hashing Digest, timing each run and counting the
// message octets and the bytes that crossed the wire for it.
template <typename Stream, typename Once>
Timing timed_runs(unsigned repeat, Stream& stream, Once&& once) {
  Timing timing;
  for (unsigned run = 0; run < repeat; ++run) {
    Digest digest(/*hashing=*/false);
    const std::uint64_t wire_before = stream.bytes_read();
    const Clock::time_point start = Clock::now();
    once(digest, run);
    add_run(timing, since(start));
    timing.octets += digest.octets();
    timing.wire_bytes += stream.bytes_read() - wire_before;
  }
  return timing;
}

int run_retr(const ConnectOptions& options, unsigned message, unsigned repeat) {
  const Connector connector(options);
  Pop3Client client(connector.open());
  client.read_greeting();
  client.login(options.user, options.password);

  Digest check(/*hashing=*/true);
  client.retr(message, check);
  const std::uint64_t message_octets = check.octets();
  const std::string sha256 = check.finish();

  const Timing timing = timed_runs(repeat, client.stream(), [&](Digest& digest, unsigned run) {
    client.retr(message, digest);
    if (digest.octets() != message_octets) {
      throw Failure("RETR " + std::to_string(run + 1) + " returned " +
                    std::to_string(digest.octets()) + " octets, the first one " +
                    std::to_string(message_octets));
    }
  });
  client.command("QUIT", "QUIT");
  print_result("retr", repeat, message_octets, sha256, timing);
  return 0;
}

int run_imap_fetch(const ConnectOptions& options, unsigned uid, unsigned repeat) {
  const Connector connector(options);
  ImapClient client(connector.open());
  client.read_greeting();
  client.run(protocol::ImapCommand("LOGIN").astring(options.user).astring(options.password),
             "LOGIN");
  client.run(protocol::ImapCommand("SELECT").string("INBOX"), "SELECT");
  protocol::ImapCommand fetch("UID FETCH");
  fetch.raw(std::to_string(uid)).raw("BODY.PEEK[]");

  auto fetch_once = [&](Digest& digest) {
    client.run(fetch, "UID FETCH", &digest);
    if (client.last_bodies() != 1 || digest.octets() != client.last_literal_size()) {
      throw Failure("UID FETCH " + std::to_string(uid) + " returned " +
                    std::to_string(client.last_bodies()) + " bodies, " +
                    std::to_string(digest.octets()) + " octets");
    }
  };
  Digest check(/*hashing=*/true);
  fetch_once(check);
  const std::uint64_t message_octets = check.octets();
  const std::string sha256 = check.finish();

  const Timing timing =
      timed_runs(repeat, client.stream(), [&](Digest& digest, unsigned) { fetch_once(digest); });
  client.run(protocol::ImapCommand("LOGOUT"), "LOGOUT");
  print_result("imap-fetch", repeat, message_octets, sha256, timing);
  return 0;
}

void raise_file_limit(std::size_t needed) {
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) != 0) {
    throw Failure("getrlimit: " + errno_text(errno));
  }
  if (files.rlim_cur >= needed) {
    return;
  }
  if (files.rlim_max < needed) {
    throw Failure("RLIMIT_NOFILE hard limit " + std::to_string(files.rlim_max) + " is below the " +
                  std::to_string(needed) + " descriptors needed");
  }
  files.rlim_cur = needed;
  if (setrlimit(RLIMIT_NOFILE, &files) != 0) {
    throw Failure("setrlimit: " + errno_text(errno));
  }
}

// Opens `count` sessions in batches of `parallel`: every command of a batch is sent
// before any reply is read, so the gateway and the upstream work on a batch at once,
// while the batch size keeps login bursts within what the upstream's login processes and
// the gateway's command timeout allow.
int run_idle_sessions(const ConnectOptions& options, unsigned count, unsigned parallel) {
  raise_file_limit(count + 64);
  const Connector connector(options);
  std::vector<std::unique_ptr<Pop3Client>> sessions;
  sessions.reserve(count);
  const Clock::time_point start = Clock::now();

  auto each = [&](std::size_t from, auto&& action) {
    for (std::size_t i = from; i < sessions.size(); ++i) {
      try {
        action(*sessions[i]);
      } catch (const Failure& e) {
        throw Failure("session " + std::to_string(i + 1) + ": " + e.what());
      }
    }
  };
  while (sessions.size() < count) {
    const std::size_t from = sessions.size();
    const std::size_t batch = std::min<std::size_t>(parallel, count - from);
    for (std::size_t i = 0; i < batch; ++i) {
      try {
        sessions.push_back(std::make_unique<Pop3Client>(connector.open()));
      } catch (const Failure& e) {
        throw Failure("session " + std::to_string(from + i + 1) + ": " + e.what());
      }
    }
    each(from, [](Pop3Client& s) { s.read_greeting(); });
    each(from, [&](Pop3Client& s) { s.send("USER " + options.user); });
    each(from, [](Pop3Client& s) { s.reply("USER"); });
    each(from, [&](Pop3Client& s) { s.send("PASS " + options.password); });
    each(from, [](Pop3Client& s) { s.reply("PASS"); });
    // A STAT answer proves the session is in TRANSACTION with its snapshot loaded.
    each(from, [](Pop3Client& s) { s.send("STAT"); });
    each(from, [](Pop3Client& s) { s.reply("STAT"); });
    if (sessions.size() % 100 == 0 || sessions.size() == count) {
      std::fprintf(stderr, "pop3_bench_client: %zu sessions logged in\n", sessions.size());
    }
  }
  std::printf("ready sessions=%u seconds=%.3f\n", count, since(start));
  std::fflush(stdout);

  // The runner measures now; it closes our stdin when done.
  char discard[256];
  while (true) {
    const ssize_t n = read(STDIN_FILENO, discard, sizeof discard);
    if (n == 0 || (n < 0 && errno != EINTR)) {
      break;
    }
  }

  unsigned quit_ok = 0;
  unsigned quit_failed = 0;
  for (auto& s : sessions) {
    try {
      s->send("QUIT");
    } catch (const Failure&) {
      ++quit_failed;
      s.reset();
    }
  }
  std::string first_failure;
  for (auto& s : sessions) {
    if (!s) {
      continue;
    }
    try {
      s->reply("QUIT");
      ++quit_ok;
    } catch (const Failure& e) {
      if (first_failure.empty()) {
        first_failure = e.what();
      }
      ++quit_failed;
    }
  }
  std::printf("quit ok=%u failed=%u\n", quit_ok, quit_failed);
  std::fflush(stdout);
  if (quit_failed > 0) {
    std::fprintf(stderr, "pop3_bench_client: QUIT failed on %u sessions, first: %s\n", quit_failed,
                 first_failure.c_str());
    return 1;
  }
  return 0;
}

// --------------------------------------------------------- many messages, short sessions

// What one retrieval session of a whole mailbox gives: the message octets (dot-unstuffed for
// POP3, the literals for IMAP) in order, hashed as one stream when asked.
struct MailboxPass {
  unsigned messages = 0;
  std::uint64_t octets = 0;
  std::uint64_t wire_bytes = 0;
  double seconds = 0;  // from the first retrieval command to the end of the last one
  std::string sha256;  // of the concatenated messages; empty unless hashing
};

// POP3: greeting, USER/PASS, STAT, then RETR 1..count (timed), QUIT.
MailboxPass pop3_pass(const Connector& connector, const ConnectOptions& options, unsigned count,
                      bool hashing) {
  Pop3Client client(connector.open());
  client.read_greeting();
  client.login(options.user, options.password);
  const std::string stat = client.command("STAT", "STAT");
  unsigned have = 0;
  if (std::sscanf(stat.c_str(), "+OK %u", &have) != 1 || have < count) {
    throw Failure("STAT says \"" + stat + "\", need " + std::to_string(count) + " messages");
  }
  MailboxPass pass;
  Digest digest(hashing);
  const std::uint64_t wire_before = client.stream().bytes_read();
  const Clock::time_point start = Clock::now();
  for (unsigned n = 1; n <= count; ++n) {
    client.retr(n, digest);
  }
  pass.seconds = since(start);
  pass.wire_bytes = client.stream().bytes_read() - wire_before;
  client.command("QUIT", "QUIT");
  pass.messages = count;
  pass.octets = digest.octets();
  pass.sha256 = digest.finish();
  return pass;
}

// IMAP: greeting, LOGIN, SELECT, UID FETCH 1:* (UID RFC822.SIZE), then one
// UID FETCH uid BODY.PEEK[] at a time for the first `count` UIDs (timed), LOGOUT.
MailboxPass imap_pass(const Connector& connector, const ConnectOptions& options, unsigned count,
                      bool hashing) {
  ImapClient client(connector.open());
  client.read_greeting();
  client.run(protocol::ImapCommand("LOGIN").astring(options.user).astring(options.password),
             "LOGIN");
  client.run(protocol::ImapCommand("SELECT").string("INBOX"), "SELECT");
  const std::vector<std::uint32_t> uids = client.list_uids();
  if (uids.size() < count) {
    throw Failure("INBOX has " + std::to_string(uids.size()) + " messages, need " +
                  std::to_string(count));
  }
  MailboxPass pass;
  Digest digest(hashing);
  const std::uint64_t wire_before = client.stream().bytes_read();
  const Clock::time_point start = Clock::now();
  for (unsigned i = 0; i < count; ++i) {
    const std::uint64_t before = digest.octets();
    client.run(protocol::ImapCommand("UID FETCH").raw(std::to_string(uids[i])).raw("BODY.PEEK[]"),
               "UID FETCH BODY.PEEK[]", &digest);
    if (client.last_bodies() != 1 || digest.octets() - before != client.last_literal_size()) {
      throw Failure("UID FETCH " + std::to_string(uids[i]) + " returned " +
                    std::to_string(client.last_bodies()) + " bodies");
    }
  }
  pass.seconds = since(start);
  pass.wire_bytes = client.stream().bytes_read() - wire_before;
  client.run(protocol::ImapCommand("LOGOUT"), "LOGOUT");
  pass.messages = count;
  pass.octets = digest.octets();
  pass.sha256 = digest.finish();
  return pass;
}

std::string join_seconds(const std::vector<double>& values) {
  std::string out;
  for (const double v : values) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.6f", v);
    if (!out.empty()) {
      out += ',';
    }
    out += buffer;
  }
  return out;
}

// retr-many / imap-fetch-many: with `check`, one untimed session hashing every message
// (the runner compares length and SHA-256 with what it APPENDed); then `repeat` timed
// sessions, each retrieving messages 1..count, whose octet totals must equal the checked
// session's (or --expect-octets). Prints one line with the seconds of every timed session.
int run_mailbox(const char* mode, bool imap, const ConnectOptions& options, unsigned count,
                unsigned repeat, bool check, std::uint64_t expect_octets) {
  const Connector connector(options);
  auto pass = [&](bool hashing) {
    return imap ? imap_pass(connector, options, count, hashing)
                : pop3_pass(connector, options, count, hashing);
  };
  std::string sha256;
  std::uint64_t octets = expect_octets;
  if (check) {
    const MailboxPass checked = pass(true);
    sha256 = checked.sha256;
    if (expect_octets != 0 && checked.octets != expect_octets) {
      throw Failure("checked session retrieved " + std::to_string(checked.octets) +
                    " octets, expected " + std::to_string(expect_octets));
    }
    octets = checked.octets;
  }
  std::vector<double> seconds;
  std::uint64_t wire = 0;
  for (unsigned run = 0; run < repeat; ++run) {
    const MailboxPass timed = pass(false);
    if (octets != 0 && timed.octets != octets) {
      throw Failure("session " + std::to_string(run + 1) + " retrieved " +
                    std::to_string(timed.octets) + " octets, expected " + std::to_string(octets));
    }
    octets = timed.octets;
    seconds.push_back(timed.seconds);
    wire += timed.wire_bytes;
  }
  std::printf("mode=%s messages=%u message_octets=%llu sha256=%s repeat=%u wire_bytes=%llu seconds=%s\n",
              mode, count, static_cast<unsigned long long>(octets),
              sha256.empty() ? "-" : sha256.c_str(), repeat, static_cast<unsigned long long>(wire),
              seconds.empty() ? "-" : join_seconds(seconds).c_str());
  std::fflush(stdout);
  return 0;
}

// One short session as a polling mail client makes it.
// POP3: greeting, USER/PASS, STAT, UIDL, LIST, RETR 1..count, QUIT.
// IMAP: greeting, LOGIN, SELECT, UID FETCH 1:* (UID RFC822.SIZE), count x
//       UID FETCH uid BODY.PEEK[], LOGOUT.
// Returns the SHA-256 of the concatenated messages.
std::string short_session(bool imap, const Connector& connector, const ConnectOptions& options,
                          const std::string& user, unsigned count) {
  Digest digest(/*hashing=*/true);
  if (imap) {
    ImapClient client(connector.open());
    client.read_greeting();
    client.run(protocol::ImapCommand("LOGIN").astring(user).astring(options.password), "LOGIN");
    client.run(protocol::ImapCommand("SELECT").string("INBOX"), "SELECT");
    const std::vector<std::uint32_t> uids = client.list_uids();
    if (uids.size() != count) {
      throw Failure("INBOX of " + user + " has " + std::to_string(uids.size()) +
                    " messages, expected " + std::to_string(count));
    }
    for (const std::uint32_t uid : uids) {
      client.run(protocol::ImapCommand("UID FETCH").raw(std::to_string(uid)).raw("BODY.PEEK[]"),
                 "UID FETCH BODY.PEEK[]", &digest);
    }
    client.run(protocol::ImapCommand("LOGOUT"), "LOGOUT");
  } else {
    Pop3Client client(connector.open());
    client.read_greeting();
    client.login(user, options.password);
    const std::string stat = client.command("STAT", "STAT");
    unsigned have = 0;
    if (std::sscanf(stat.c_str(), "+OK %u", &have) != 1 || have != count) {
      throw Failure("STAT of " + user + " says \"" + stat + "\", expected " +
                    std::to_string(count) + " messages");
    }
    if (client.listing("UIDL", "UIDL") != count || client.listing("LIST", "LIST") != count) {
      throw Failure("UIDL or LIST of " + user + " did not list " + std::to_string(count) +
                    " messages");
    }
    for (unsigned n = 1; n <= count; ++n) {
      client.retr(n, digest);
    }
    client.command("QUIT", "QUIT");
  }
  return digest.finish();
}

// `clients` threads, each with its own user (<user>1 .. <user>N, or --user for all with
// --users 0), run short sessions back to back until `duration` seconds have passed
// (sessions under way then complete) or `max_sessions` are done. Every session's
// messages are hashed and compared with --expect-sha256 (or with each other).
int run_short_sessions(bool imap, const ConnectOptions& options, unsigned clients, double duration,
                       unsigned max_sessions, unsigned count, unsigned users,
                       const std::string& expect_sha256) {
  raise_file_limit(clients + 64);
  const Connector connector(options);
  std::mutex mutex;
  std::vector<double> latencies;
  std::string first_error;
  std::string reference = expect_sha256;
  unsigned failed = 0;
  unsigned mismatched = 0;
  std::atomic<unsigned> started{0};
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration));

  auto worker = [&](unsigned index) {
    const std::string user =
        users == 0 ? options.user : options.user + std::to_string(index % users + 1);
    std::vector<double> mine;
    for (;;) {
      if (max_sessions != 0 ? started.fetch_add(1) >= max_sessions : Clock::now() >= deadline) {
        break;
      }
      const Clock::time_point begin = Clock::now();
      try {
        const std::string sha = short_session(imap, connector, options, user, count);
        mine.push_back(since(begin));
        const std::lock_guard<std::mutex> lock(mutex);
        if (reference.empty()) {
          reference = sha;
        } else if (sha != reference) {
          ++mismatched;
        }
      } catch (const Failure& e) {
        const std::lock_guard<std::mutex> lock(mutex);
        ++failed;
        if (first_error.empty()) {
          first_error = user + ": " + e.what();
        }
        break;  // one failure ends this client; the run fails
      }
    }
    const std::lock_guard<std::mutex> lock(mutex);
    latencies.insert(latencies.end(), mine.begin(), mine.end());
  };
  std::vector<std::thread> threads;
  threads.reserve(clients);
  for (unsigned i = 0; i < clients; ++i) {
    threads.emplace_back(worker, i);
  }
  for (std::thread& t : threads) {
    t.join();
  }
  const double elapsed = since(start);
  std::sort(latencies.begin(), latencies.end());
  auto percentile = [&](double p) {
    if (latencies.empty()) {
      return 0.0;
    }
    const std::size_t i = std::min(latencies.size() - 1,
                                   static_cast<std::size_t>(p * static_cast<double>(latencies.size())));
    return latencies[i] * 1000;
  };
  const std::size_t sessions = latencies.size();
  std::printf(
      "mode=short-sessions protocol=%s clients=%u sessions=%zu failed=%u mismatched=%u "
      "seconds=%.6f sessions_per_s=%.2f p50_ms=%.2f p95_ms=%.2f sha256=%s\n",
      imap ? "imap" : "pop3", clients, sessions, failed, mismatched, elapsed,
      elapsed > 0 ? static_cast<double>(sessions) / elapsed : 0, percentile(0.5),
      percentile(0.95), reference.empty() ? "-" : reference.c_str());
  std::fflush(stdout);
  if (failed > 0) {
    std::fprintf(stderr, "pop3_bench_client: %u sessions failed, first: %s\n", failed,
                 first_error.c_str());
    return 1;
  }
  if (mismatched > 0) {
    std::fprintf(stderr, "pop3_bench_client: %u sessions retrieved other octets than %s\n",
                 mismatched, expect_sha256.empty() ? "the first session" : "--expect-sha256");
    return 1;
  }
  if (sessions == 0) {
    std::fprintf(stderr, "pop3_bench_client: no session completed\n");
    return 1;
  }
  return 0;
}

void add_connect_options(CLI::App& app, ConnectOptions& options, const char* address_flag,
                         const char* address_help) {
  app.add_option(address_flag, options.address, address_help)->required();
  app.add_flag("--tls", options.tls, "TLS from the first byte (POP3S / IMAPS)");
  app.add_option("--ca", options.ca_file,
                 "CA file to verify the server certificate with (default: no verification)");
  app.add_option("--server-name", options.server_name, "SNI and verified name")
      ->capture_default_str();
  app.add_option("--user", options.user, "user name")->required();
  app.add_option("--pass", options.password, "password")->required();
  app.add_option("--timeout", options.timeout_s, "seconds a read may wait before failing")
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  // A server that resets the connection must give EPIPE, not kill the client.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"POP3/IMAP benchmark client for popbridge (see tests/bench/README.md)"};
  app.require_subcommand(1);

  ConnectOptions retr_options;
  unsigned message = 1;
  unsigned retr_repeat = 5;
  CLI::App* retr = app.add_subcommand("retr", "RETR one message repeatedly through POP3");
  add_connect_options(*retr, retr_options, "--pop3", "POP3 server HOST:PORT");
  retr->add_option("--message", message, "message number")->capture_default_str();
  retr->add_option("--repeat", retr_repeat, "timed retrievals")->capture_default_str();

  ConnectOptions fetch_options;
  unsigned uid = 1;
  unsigned fetch_repeat = 5;
  CLI::App* fetch =
      app.add_subcommand("imap-fetch", "UID FETCH BODY.PEEK[] one message repeatedly");
  add_connect_options(*fetch, fetch_options, "--imap", "IMAP server HOST:PORT");
  fetch->add_option("--uid", uid, "message UID")->capture_default_str();
  fetch->add_option("--repeat", fetch_repeat, "timed fetches")->capture_default_str();

  ConnectOptions idle_options;
  unsigned count = 1000;
  unsigned parallel = 50;
  CLI::App* idle = app.add_subcommand("idle-sessions",
                                      "hold COUNT authenticated POP3 sessions until stdin closes");
  add_connect_options(*idle, idle_options, "--pop3", "POP3 server HOST:PORT");
  idle->add_option("--count", count, "sessions")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000000u));
  idle->add_option("--parallel", parallel, "logins in flight at once")
      ->capture_default_str()
      ->check(CLI::Range(1u, 10000u));

  // Many messages, one session per timed run.
  ConnectOptions many_options;
  unsigned many_count = 20;
  unsigned many_repeat = 5;
  bool many_check = false;
  std::uint64_t many_expect = 0;
  auto add_many = [&](CLI::App& sub, const char* flag, const char* help) {
    add_connect_options(sub, many_options, flag, help);
    sub.add_option("--messages", many_count, "retrieve messages 1..N (the first N UIDs for IMAP)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000000u));
    sub.add_option("--repeat", many_repeat, "timed sessions")->capture_default_str();
    sub.add_flag("--check", many_check,
                 "first one untimed session hashing every message (prints sha256)");
    sub.add_option("--expect-octets", many_expect,
                   "fail unless every session retrieves this many message octets");
  };
  CLI::App* retr_many = app.add_subcommand(
      "retr-many", "sessions of RETR 1..N through POP3 (login and QUIT untimed)");
  add_many(*retr_many, "--pop3", "POP3 server HOST:PORT");
  CLI::App* fetch_many = app.add_subcommand(
      "imap-fetch-many", "sessions of UID FETCH uid BODY.PEEK[], one command at a time");
  add_many(*fetch_many, "--imap", "IMAP server HOST:PORT");

  // Short sessions from concurrent clients.
  ConnectOptions short_options;
  std::string short_pop3;
  std::string short_imap;
  unsigned short_clients = 64;
  double short_duration = 10;
  unsigned short_max = 0;
  unsigned short_count = 20;
  unsigned short_users = 0;
  std::string short_sha;
  CLI::App* short_sub = app.add_subcommand(
      "short-sessions", "CLIENTS concurrent clients making short sessions back to back");
  auto* pop3_opt = short_sub->add_option("--pop3", short_pop3, "POP3 server HOST:PORT");
  short_sub->add_option("--imap", short_imap, "IMAP server HOST:PORT")->excludes(pop3_opt);
  short_sub->add_flag("--tls", short_options.tls, "TLS from the first byte (POP3S / IMAPS)");
  short_sub->add_option("--ca", short_options.ca_file, "CA file to verify the server with");
  short_sub->add_option("--server-name", short_options.server_name, "SNI and verified name")
      ->capture_default_str();
  short_sub->add_option("--user", short_options.user, "user name (prefix with --users)")
      ->required();
  short_sub->add_option("--pass", short_options.password, "password (every user's)")->required();
  short_sub->add_option("--timeout", short_options.timeout_s, "seconds a read may wait")
      ->capture_default_str();
  short_sub->add_option("--clients", short_clients, "concurrent clients")
      ->capture_default_str()
      ->check(CLI::Range(1u, 10000u));
  short_sub->add_option("--duration", short_duration, "seconds to start new sessions for")
      ->capture_default_str();
  short_sub->add_option("--sessions", short_max, "stop after this many sessions (0: --duration)")
      ->capture_default_str();
  short_sub->add_option("--messages", short_count, "messages every INBOX holds and each session retrieves")
      ->capture_default_str();
  short_sub->add_option("--users", short_users,
                        "client i logs in as USER(i mod N + 1); 0: everyone as USER")
      ->capture_default_str();
  short_sub->add_option("--expect-sha256", short_sha, "SHA-256 of one session's messages, concatenated");

  CLI11_PARSE(app, argc, argv);
  try {
    if (retr->parsed()) {
      return run_retr(retr_options, message, retr_repeat);
    }
    if (fetch->parsed()) {
      return run_imap_fetch(fetch_options, uid, fetch_repeat);
    }
    if (retr_many->parsed() || fetch_many->parsed()) {
      const bool imap = fetch_many->parsed();
      return run_mailbox(imap ? "imap-fetch-many" : "retr-many", imap, many_options, many_count,
                         many_repeat, many_check, many_expect);
    }
    if (short_sub->parsed()) {
      if (short_pop3.empty() == short_imap.empty()) {
        throw Failure("short-sessions needs --pop3 or --imap");
      }
      short_options.address = short_imap.empty() ? short_pop3 : short_imap;
      return run_short_sessions(!short_imap.empty(), short_options, short_clients, short_duration,
                                short_max, short_count, short_users, short_sha);
    }
    return run_idle_sessions(idle_options, count, parallel);
  } catch (const Failure& e) {
    std::fprintf(stderr, "pop3_bench_client: %s\n", e.what());
    return 1;
  }
}
