// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "protocol/common/secret.h"

namespace popbridge::protocol {

// RFC 2449 §4: a command line is at most 255 octets including the CRLF.
inline constexpr std::size_t kMaxCommandLine = 253;
// AUTH lines (initial response, continuation) may carry long tokens (XOAUTH2).
inline constexpr std::size_t kMaxAuthLine = 16384;

enum class Pop3Verb : std::uint8_t {
  kUser,
  kPass,
  kApop,
  kStat,
  kList,
  kUidl,
  kRetr,
  kTop,
  kDele,
  kRset,
  kNoop,
  kQuit,
  kCapa,
  kStls,
  kAuth,
};
inline constexpr std::size_t kPop3VerbCount = 15;

std::string_view verb_name(Pop3Verb verb);  // upper-case, e.g. "RETR"

struct Pop3Command {
  Pop3Verb verb = Pop3Verb::kNoop;
  // LIST, UIDL: optional; RETR, DELE, TOP: required. Always >= 1 when set.
  std::optional<std::uint32_t> message;
  // TOP: the number of body lines (>= 0).
  std::uint64_t lines = 0;
  // USER: the name. APOP: the name. AUTH: the mechanism, upper-cased.
  std::string argument;
  // PASS: everything after "PASS " (may contain spaces). APOP: the digest.
  Secret secret;
  // AUTH: the initial response exactly as sent (base64 or "="), if any.
  std::optional<Secret> initial_response;
};

struct Pop3ParseError {
  std::string message;  // for "-ERR <message>"
};

using Pop3ParseResult = std::variant<Pop3Command, Pop3ParseError>;

// Parses one command line (without its CRLF). Verbs are case-insensitive; arguments are
// separated by single spaces (extra spaces tolerated); numbers are decimal without sign.
// Lines longer than kMaxCommandLine are an error, except AUTH lines (up to kMaxAuthLine).
// Never throws; pure.
Pop3ParseResult parse_pop3_command(std::string_view line);

}  // namespace popbridge::protocol
