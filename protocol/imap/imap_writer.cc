// SPDX-License-Identifier: Apache-2.0
#include "protocol/imap/imap_writer.h"

#include <limits>

namespace popbridge::protocol {
namespace {

// Longer arguments go as literals: some servers cap quoted strings, and a literal is
// always unambiguous.
constexpr std::size_t kMaxQuoted = 1024;

// ATOM-CHAR (RFC 3501 §9): CHAR except atom-specials. "]" (resp-specials) is excluded as
// well: it is legal in an astring, but a bare "]" confuses some servers' parsers.
bool is_atom_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u <= 0x20 || u >= 0x7f) {
    return false;  // CTL, SP, DEL and 8-bit
  }
  switch (c) {
    case '(':
    case ')':
    case '{':
    case '%':
    case '*':
    case '"':
    case '\\':
    case ']':
      return false;
    default:
      return true;
  }
}

bool is_atom(std::string_view text) {
  if (text.empty()) {
    return false;
  }
  for (char c : text) {
    if (!is_atom_char(c)) {
      return false;
    }
  }
  return true;
}

// Quoted strings may legally hold other CTLs, but printable ASCII only keeps every server
// happy; anything else goes as a literal, which carries any octet.
bool is_quotable(std::string_view text) {
  if (text.size() > kMaxQuoted) {
    return false;
  }
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      return false;
    }
  }
  return true;
}

void append_quoted(std::string& out, std::string_view text) {
  out.push_back('"');
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
    }
    out.push_back(c);
  }
  out.push_back('"');
}

}  // namespace

ImapCommand::ImapCommand(std::string_view verb) : verb_(verb) {}

ImapCommand& ImapCommand::raw(std::string_view text) {
  arguments_.push_back({Argument::Kind::kRaw, std::string(text)});
  return *this;
}

ImapCommand& ImapCommand::attached(std::string_view text) {
  arguments_.push_back({Argument::Kind::kAttached, std::string(text)});
  return *this;
}

ImapCommand& ImapCommand::astring(std::string_view text) {
  if (is_atom(text)) {
    arguments_.push_back({Argument::Kind::kAtom, std::string(text)});
    return *this;
  }
  return string(text);
}

ImapCommand& ImapCommand::string(std::string_view text) {
  const auto kind = is_quotable(text) ? Argument::Kind::kQuoted : Argument::Kind::kLiteral;
  arguments_.push_back({kind, std::string(text)});
  return *this;
}

std::vector<std::string> ImapCommand::render(std::string_view tag, bool literal_plus) const {
  std::vector<std::string> parts(1);
  std::string* out = &parts.back();
  out->append(tag);
  out->push_back(' ');
  out->append(verb_);
  for (const Argument& argument : arguments_) {
    if (argument.kind != Argument::Kind::kAttached) {
      out->push_back(' ');
    }
    switch (argument.kind) {
      case Argument::Kind::kRaw:
      case Argument::Kind::kAttached:
      case Argument::Kind::kAtom:
        out->append(argument.text);
        break;
      case Argument::Kind::kQuoted:
        append_quoted(*out, argument.text);
        break;
      case Argument::Kind::kLiteral:
        out->push_back('{');
        out->append(std::to_string(argument.text.size()));
        out->append(literal_plus ? "+}\r\n" : "}\r\n");
        if (!literal_plus) {
          // A synchronising literal's octets may only follow the server's "+".
          parts.emplace_back();
          out = &parts.back();
        }
        out->append(argument.text);
        break;
    }
  }
  out->append("\r\n");
  return parts;
}

std::string compress_uid_set(const std::vector<unsigned>& sorted_uids) {
  std::string out;
  std::size_t i = 0;
  while (i < sorted_uids.size()) {
    const unsigned first = sorted_uids[i];
    unsigned last = first;
    while (i + 1 < sorted_uids.size() && last != std::numeric_limits<unsigned>::max() &&
           sorted_uids[i + 1] == last + 1) {
      last = sorted_uids[++i];
    }
    ++i;
    if (!out.empty()) {
      out.push_back(',');
    }
    out.append(std::to_string(first));
    if (last != first) {
      out.push_back(':');
      out.append(std::to_string(last));
    }
  }
  return out;
}

}  // namespace popbridge::protocol
