// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/pop3_command.h"

#include <array>
#include <limits>

namespace popbridge::protocol {

namespace {

constexpr std::array<std::string_view, kPop3VerbCount> kVerbNames = {
    "USER", "PASS", "APOP", "STAT", "LIST", "UIDL", "RETR", "TOP",
    "DELE", "RSET", "NOOP", "QUIT", "CAPA", "STLS", "AUTH",
};

// RFC 4422 §3.1: at most 20 characters.
constexpr std::size_t kMaxMechanismName = 20;
constexpr std::size_t kMaxUserName = 255;

char to_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

bool equals_upper(std::string_view token, std::string_view upper) {
  if (token.size() != upper.size()) {
    return false;
  }
  for (std::size_t i = 0; i < token.size(); ++i) {
    if (to_upper(token[i]) != upper[i]) {
      return false;
    }
  }
  return true;
}

std::optional<Pop3Verb> lookup_verb(std::string_view token) {
  for (std::size_t i = 0; i < kVerbNames.size(); ++i) {
    if (equals_upper(token, kVerbNames[i])) {
      return static_cast<Pop3Verb>(i);
    }
  }
  return std::nullopt;
}

// NUL, CR, LF and the rest would let a client smuggle bytes into logs or the upstream
// command; 8-bit octets stay allowed (UTF-8 user names and passwords exist in the wild).
bool has_control(std::string_view line) {
  for (const char c : line) {
    const auto octet = static_cast<unsigned char>(c);
    if (octet < 0x20 || octet == 0x7f) {
      return true;
    }
  }
  return false;
}

// Arguments after the verb, split at runs of spaces. Only the few a command can take are
// kept; `count` keeps counting so extra arguments are still an error.
struct Arguments {
  static constexpr std::size_t kMax = 3;
  std::array<std::string_view, kMax> values;
  std::size_t count = 0;
};

Arguments split_arguments(std::string_view rest) {
  Arguments args;
  std::size_t i = 0;
  while (i < rest.size()) {
    if (rest[i] == ' ') {
      ++i;
      continue;
    }
    std::size_t end = rest.find(' ', i);
    if (end == std::string_view::npos) {
      end = rest.size();
    }
    if (args.count < Arguments::kMax) {
      args.values[args.count] = rest.substr(i, end - i);
    }
    ++args.count;
    i = end;
  }
  return args;
}

// Decimal digits only: no sign, no spaces, no hex.
std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  if (text.empty()) {
    return std::nullopt;
  }
  std::uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) {
      return std::nullopt;
    }
    value = value * 10 + digit;
  }
  return value;
}

std::optional<std::uint32_t> parse_message_number(std::string_view text) {
  const std::optional<std::uint64_t> value = parse_decimal(text);
  if (!value || *value == 0 || *value > std::numeric_limits<std::uint32_t>::max()) {
    return std::nullopt;
  }
  return static_cast<std::uint32_t>(*value);
}

bool valid_mechanism(std::string_view name) {
  if (name.empty() || name.size() > kMaxMechanismName) {
    return false;
  }
  for (const char c : name) {
    const char upper = to_upper(c);
    const bool ok =
        (upper >= 'A' && upper <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) {
      return false;
    }
  }
  return true;
}

Pop3ParseResult error(const char* message) { return Pop3ParseError{std::string(message)}; }

Pop3ParseResult parse_arguments(Pop3Command command, std::string_view rest) {
  const Arguments args = split_arguments(rest);
  switch (command.verb) {
    case Pop3Verb::kStat:
    case Pop3Verb::kRset:
    case Pop3Verb::kNoop:
    case Pop3Verb::kQuit:
    case Pop3Verb::kCapa:
    case Pop3Verb::kStls:
      if (args.count != 0) {
        return Pop3ParseError{"syntax error: " + std::string(verb_name(command.verb)) +
                              " takes no arguments"};
      }
      break;
    case Pop3Verb::kList:
    case Pop3Verb::kUidl:
      if (args.count > 1) {
        return Pop3ParseError{"syntax error: " + std::string(verb_name(command.verb)) +
                              " takes at most one message number"};
      }
      if (args.count == 1) {
        command.message = parse_message_number(args.values[0]);
        if (!command.message) {
          return error("syntax error: invalid message number");
        }
      }
      break;
    case Pop3Verb::kRetr:
    case Pop3Verb::kDele:
      if (args.count != 1) {
        return Pop3ParseError{"syntax error: " + std::string(verb_name(command.verb)) +
                              " needs a message number"};
      }
      command.message = parse_message_number(args.values[0]);
      if (!command.message) {
        return error("syntax error: invalid message number");
      }
      break;
    case Pop3Verb::kTop: {
      if (args.count != 2) {
        return error("syntax error: TOP needs a message number and a line count");
      }
      command.message = parse_message_number(args.values[0]);
      if (!command.message) {
        return error("syntax error: invalid message number");
      }
      const std::optional<std::uint64_t> lines = parse_decimal(args.values[1]);
      if (!lines) {
        return error("syntax error: invalid line count");
      }
      command.lines = *lines;
      break;
    }
    case Pop3Verb::kUser:
      if (args.count != 1 || args.values[0].size() > kMaxUserName) {
        return error("syntax error: USER needs one user name");
      }
      command.argument = args.values[0];
      break;
    case Pop3Verb::kApop:
      if (args.count != 2) {
        return error("syntax error: APOP needs a name and a digest");
      }
      command.argument = args.values[0];
      command.secret = Secret(args.values[1]);
      break;
    case Pop3Verb::kAuth:
      if (args.count > 2) {
        return error("syntax error: AUTH takes a mechanism and an optional initial response");
      }
      if (args.count >= 1) {
        if (!valid_mechanism(args.values[0])) {
          return error("syntax error: invalid mechanism name");
        }
        command.argument.reserve(args.values[0].size());
        for (const char c : args.values[0]) {
          command.argument.push_back(to_upper(c));
        }
      }
      if (args.count == 2) {
        command.initial_response.emplace(args.values[1]);
      }
      break;
    case Pop3Verb::kPass:
      // Handled by the caller: the password is not split at spaces.
      break;
  }
  return command;
}

}  // namespace

std::string_view verb_name(Pop3Verb verb) {
  const auto index = static_cast<std::size_t>(verb);
  return index < kVerbNames.size() ? kVerbNames[index] : std::string_view("?");
}

Pop3ParseResult parse_pop3_command(std::string_view line) {
  if (line.empty()) {
    return error("empty command");
  }
  const std::size_t space = line.find(' ');
  const std::string_view verb_token = line.substr(0, space);
  const bool is_auth = equals_upper(verb_token, "AUTH");
  if (line.size() > (is_auth ? kMaxAuthLine : kMaxCommandLine)) {
    return error("line too long");
  }
  if (has_control(line)) {
    return error("invalid character in command");
  }
  const std::optional<Pop3Verb> verb = lookup_verb(verb_token);
  if (!verb) {
    return error("unknown command");
  }
  const std::string_view rest =
      space == std::string_view::npos ? std::string_view() : line.substr(space + 1);

  Pop3Command command;
  command.verb = *verb;
  if (*verb == Pop3Verb::kPass) {
    // RFC 1939 §7: the password may contain spaces, so it is the rest of the line as is.
    if (rest.empty()) {
      return error("syntax error: PASS needs a password");
    }
    command.secret = Secret(rest);
    return command;
  }
  return parse_arguments(std::move(command), rest);
}

}  // namespace popbridge::protocol
