// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "protocol/common/secret.h"
#include "proxy/net/tls_context.h"

namespace popbridge::proxy {

// The old POP3 server, as `popbridge uidl-import` reads it: pop3s://host:995 (implicit
// TLS) or pop3://host:110 (STLS when offered; a login in the clear only on loopback).
struct Pop3SourceUrl {
  bool implicit_tls = true;
  config::Endpoint address;
  std::string to_string() const;
};
std::optional<Pop3SourceUrl> parse_pop3_source_url(std::string_view url, std::string& error);

// One message as the old server lists it.
struct SourceMessage {
  std::string uidl;
  std::uint64_t size = 0;
};

// A blocking POP3 client for a batch tool: one command at a time, every wait bounded by
// the timeout. Certificates are verified against ca_file (the system's bundle unless
// --source-ca names one).
class Pop3Source {
 public:
  Pop3Source(Pop3SourceUrl url, SSL_CTX* tls_context, std::chrono::seconds timeout);
  ~Pop3Source();
  Pop3Source(const Pop3Source&) = delete;
  Pop3Source& operator=(const Pop3Source&) = delete;

  // Each returns false and says why in error.
  bool connect(std::string& error);
  bool login(const std::string& user, const protocol::Secret& password, std::string& error);
  // UIDL and LIST, joined by message number.
  bool list(std::vector<SourceMessage>& messages, std::string& error);
  // TOP n 0: the header section, dot-stuffing undone, CRLF line ends.
  bool header(std::size_t number, std::string& header, std::string& error);
  void quit();

 private:
  bool send_line(std::string_view line, std::string& error);
  bool read_line(std::string& line, std::string& error);
  // A +OK status line; false with the server's text in error otherwise.
  bool expect_ok(std::string_view command, std::string& status, std::string& error);
  bool read_multiline(std::vector<std::string>& lines, std::string& error);
  bool start_tls(std::string& error);
  bool fill(std::string& error);

  Pop3SourceUrl url_;
  SSL_CTX* tls_context_;
  std::chrono::seconds timeout_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::string buffer_;
};

}  // namespace popbridge::proxy
