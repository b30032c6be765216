// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "tests/bench/bench_client/connection.h"
#include "tests/bench/bench_client/digest.h"

namespace popbridge::bench {

// The POP3 commands the benchmark sends (RFC 1939), one blocking reply at a time.
class Pop3Client {
 public:
  explicit Pop3Client(std::unique_ptr<Stream> stream) : stream_(std::move(stream)) {}

  void read_greeting();
  void send(std::string_view command);
  // Reads a single-line reply and fails unless it is +OK. `what` names the command (never
  // the password, which is why it is not derived from the command line).
  std::string reply(const char* what);
  std::string command(std::string_view command, const char* what);
  void login(const std::string& user, const std::string& password);
  // RETR n: returns the digest of the unstuffed body.
  void retr(unsigned message, Digest& digest);
  // A multi-line reply without body transparency concerns (UIDL, LIST): returns its lines.
  unsigned listing(std::string_view command, const char* what);
  Stream& stream() { return *stream_; }

 private:
  static void expect_ok(const std::string& line, const char* what);
  std::unique_ptr<Stream> stream_;
};

}  // namespace popbridge::bench
