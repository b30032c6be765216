// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/pop3_source.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>

namespace popbridge::proxy {
namespace {

// Lines of an answer; a header line may be long, a sane server's status line is not.
constexpr std::size_t kMaxLine = 64 * 1024;

bool loopback(const std::string& host) {
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  return host == "::1" || host == "localhost";
}

bool ip_literal(const std::string& host) {
  unsigned char address[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), address) == 1 ||
         inet_pton(AF_INET6, host.c_str(), address) == 1;
}

std::string tls_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    text += text.empty() ? "" : "; ";
    text += buffer;
  }
  return text.empty() ? "connection closed" : text;
}

bool parse_number(std::string_view text, std::uint64_t& out) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), out);
  return error == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::string Pop3SourceUrl::to_string() const {
  return (implicit_tls ? "pop3s://" : "pop3://") + address.to_string();
}

std::optional<Pop3SourceUrl> parse_pop3_source_url(std::string_view url, std::string& error) {
  Pop3SourceUrl parsed;
  std::string_view rest;
  if (url.starts_with("pop3s://")) {
    rest = url.substr(8);
  } else if (url.starts_with("pop3://")) {
    parsed.implicit_tls = false;
    rest = url.substr(7);
  } else {
    error = "--source must be pop3s://HOST[:PORT] or pop3://HOST[:PORT]";
    return std::nullopt;
  }
  if (rest.ends_with('/')) {
    rest.remove_suffix(1);
  }
  const bool has_port = rest.rfind(':') != std::string_view::npos &&
                        (rest.front() != '[' || rest.rfind(':') > rest.rfind(']'));
  const std::string with_port =
      has_port ? std::string(rest) : std::string(rest) + (parsed.implicit_tls ? ":995" : ":110");
  std::optional<config::Endpoint> endpoint = config::parse_endpoint(with_port, error);
  if (!endpoint) {
    error = "--source " + std::string(url) + ": " + error;
    return std::nullopt;
  }
  parsed.address = std::move(*endpoint);
  return parsed;
}

Pop3Source::Pop3Source(Pop3SourceUrl url, SSL_CTX* tls_context, std::chrono::seconds timeout)
    : url_(std::move(url)), tls_context_(tls_context), timeout_(timeout) {}

Pop3Source::~Pop3Source() {
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
  }
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

bool Pop3Source::connect(std::string& error) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(url_.address.port);
  if (const int status = getaddrinfo(url_.address.host.c_str(), port.c_str(), &hints, &found);
      status != 0) {
    error = url_.to_string() + ": " + gai_strerror(status);
    return false;
  }
  const int timeout_ms = static_cast<int>(timeout_.count() * 1000);
  for (addrinfo* at = found; at != nullptr && fd_ < 0; at = at->ai_next) {
    const int fd = ::socket(at->ai_family, at->ai_socktype | SOCK_NONBLOCK, at->ai_protocol);
    if (fd < 0) {
      continue;
    }
    int status = ::connect(fd, at->ai_addr, at->ai_addrlen);
    if (status != 0 && errno == EINPROGRESS) {
      pollfd writable{fd, POLLOUT, 0};
      int socket_error = ETIMEDOUT;
      socklen_t length = sizeof(socket_error);
      if (::poll(&writable, 1, timeout_ms) == 1) {
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &socket_error, &length);
      }
      status = socket_error == 0 ? 0 : -1;
      errno = socket_error;
    }
    if (status != 0) {
      error = url_.to_string() + ": " + std::strerror(errno);
      ::close(fd);
      continue;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    timeval limit{static_cast<time_t>(timeout_.count()), 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
    fd_ = fd;
  }
  freeaddrinfo(found);
  if (fd_ < 0) {
    return false;
  }
  if (url_.implicit_tls && !start_tls(error)) {
    return false;
  }
  std::string greeting;
  if (!expect_ok("greeting", greeting, error)) {
    return false;
  }
  if (url_.implicit_tls) {
    return true;
  }
  // STLS when the server offers it (RFC 2595); CAPA itself may be missing on old servers.
  bool offers_stls = false;
  std::string status;
  if (!send_line("CAPA", error) || !read_line(status, error)) {
    return false;
  }
  if (status.starts_with("+OK")) {
    std::vector<std::string> capabilities;
    if (!read_multiline(capabilities, error)) {
      return false;
    }
    for (const std::string& capability : capabilities) {
      offers_stls = offers_stls || capability == "STLS";
    }
  }
  if (offers_stls) {
    return send_line("STLS", error) && expect_ok("STLS", status, error) && start_tls(error);
  }
  if (!loopback(url_.address.host)) {
    error = url_.to_string() +
            " offers no STLS: a password is sent in the clear only to a loopback address; use "
            "pop3s://";
    return false;
  }
  return true;
}

bool Pop3Source::start_tls(std::string& error) {
  ssl_ = SSL_new(tls_context_);
  if (ssl_ == nullptr) {
    error = "TLS: " + tls_errors();
    return false;
  }
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
  if (ip_literal(url_.address.host)) {
    X509_VERIFY_PARAM_set1_ip_asc(param, url_.address.host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl_, url_.address.host.c_str());
    X509_VERIFY_PARAM_set1_host(param, url_.address.host.data(), url_.address.host.size());
  }
  SSL_set_fd(ssl_, fd_);
  // Bytes read before the handshake would be an injection (RFC 2595 §2.2 asks clients
  // to discard them); the buffer is dropped.
  buffer_.clear();
  if (SSL_connect(ssl_) != 1) {
    const long verify = SSL_get_verify_result(ssl_);
    error = url_.to_string() + ": TLS handshake failed: " +
            (verify != X509_V_OK ? X509_verify_cert_error_string(verify) : tls_errors());
    return false;
  }
  return true;
}

bool Pop3Source::fill(std::string& error) {
  char chunk[16 * 1024];
  const int got = ssl_ != nullptr ? SSL_read(ssl_, chunk, sizeof(chunk))
                                  : static_cast<int>(::recv(fd_, chunk, sizeof(chunk), 0));
  if (got <= 0) {
    error = url_.to_string() + ": " +
            (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? "no answer in time"
                                                                  : "connection closed");
    return false;
  }
  buffer_.append(chunk, static_cast<std::size_t>(got));
  return true;
}

bool Pop3Source::send_line(std::string_view line, std::string& error) {
  std::string bytes = std::string(line) + "\r\n";
  std::string_view rest = bytes;
  while (!rest.empty()) {
    const int sent = ssl_ != nullptr
                         ? SSL_write(ssl_, rest.data(), static_cast<int>(rest.size()))
                         : static_cast<int>(::send(fd_, rest.data(), rest.size(), MSG_NOSIGNAL));
    if (sent <= 0) {
      error = url_.to_string() + ": the connection broke while sending";
      return false;
    }
    rest.remove_prefix(static_cast<std::size_t>(sent));
  }
  return true;
}

bool Pop3Source::read_line(std::string& line, std::string& error) {
  std::size_t end;
  while ((end = buffer_.find('\n')) == std::string::npos) {
    if (buffer_.size() > kMaxLine) {
      error = url_.to_string() + ": a line longer than 64 KiB";
      return false;
    }
    if (!fill(error)) {
      return false;
    }
  }
  line.assign(buffer_, 0, end);
  buffer_.erase(0, end + 1);
  if (!line.empty() && line.back() == '\r') {
    line.pop_back();
  }
  return true;
}

bool Pop3Source::expect_ok(std::string_view command, std::string& status, std::string& error) {
  if (!read_line(status, error)) {
    return false;
  }
  if (status.starts_with("+OK")) {
    return true;
  }
  error = url_.to_string() + ": " + std::string(command) + " refused: " + status.substr(0, 200);
  return false;
}

bool Pop3Source::read_multiline(std::vector<std::string>& lines, std::string& error) {
  std::string line;
  while (read_line(line, error)) {
    if (line == ".") {
      return true;
    }
    lines.push_back(line.starts_with('.') ? line.substr(1) : line);
  }
  return false;
}

bool Pop3Source::login(const std::string& user, const protocol::Secret& password,
                       std::string& error) {
  std::string status;
  if (!send_line("USER " + user, error) || !expect_ok("USER", status, error)) {
    return false;
  }
  std::string command = "PASS ";
  command.append(password.view());
  const bool sent = send_line(command, error);
  std::fill(command.begin(), command.end(), '\0');
  return sent && expect_ok("PASS", status, error);
}

bool Pop3Source::list(std::vector<SourceMessage>& messages, std::string& error) {
  std::string status;
  std::vector<std::string> uidls;
  std::vector<std::string> sizes;
  if (!send_line("UIDL", error) || !expect_ok("UIDL", status, error) ||
      !read_multiline(uidls, error) || !send_line("LIST", error) ||
      !expect_ok("LIST", status, error) || !read_multiline(sizes, error)) {
    return false;
  }
  std::map<std::uint64_t, SourceMessage> by_number;
  for (const std::string& line : uidls) {
    const std::size_t space = line.find(' ');
    std::uint64_t number = 0;
    if (space == std::string::npos || !parse_number(line.substr(0, space), number)) {
      error = url_.to_string() + ": unreadable UIDL line: " + line.substr(0, 100);
      return false;
    }
    by_number[number].uidl = line.substr(space + 1);
  }
  for (const std::string& line : sizes) {
    const std::size_t space = line.find(' ');
    std::uint64_t number = 0;
    std::uint64_t size = 0;
    if (space == std::string::npos || !parse_number(line.substr(0, space), number) ||
        !parse_number(line.substr(space + 1), size) || by_number.count(number) == 0) {
      error = url_.to_string() + ": unreadable LIST line: " + line.substr(0, 100);
      return false;
    }
    by_number[number].size = size;
  }
  messages.clear();
  for (std::uint64_t expected = 1; auto& [number, message] : by_number) {
    if (number != expected++) {
      error = url_.to_string() + ": message numbers are not 1.." + std::to_string(by_number.size());
      return false;
    }
    messages.push_back(std::move(message));
  }
  return true;
}

bool Pop3Source::header(std::size_t number, std::string& header, std::string& error) {
  std::string status;
  std::vector<std::string> lines;
  if (!send_line("TOP " + std::to_string(number) + " 0", error) ||
      !expect_ok("TOP", status, error) || !read_multiline(lines, error)) {
    return false;
  }
  header.clear();
  for (const std::string& line : lines) {
    header += line;
    header += "\r\n";
  }
  return true;
}

void Pop3Source::quit() {
  std::string ignored;
  if (fd_ >= 0 && send_line("QUIT", ignored)) {
    read_line(ignored, ignored);
  }
}

}  // namespace popbridge::proxy
