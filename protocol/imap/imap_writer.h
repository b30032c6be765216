// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace popbridge::protocol {

// Builds one tagged IMAP command (RFC 3501 §9 / RFC 9051). Arguments that are not safe
// as an atom are written as a quoted string, or as a literal when they hold CR, LF, NUL,
// 8-bit octets or are long.
class ImapCommand {
 public:
  // verb may hold several words, e.g. "UID FETCH".
  explicit ImapCommand(std::string_view verb);

  // Appends text exactly as given (sequence sets, fetch item lists, "(\\Deleted)").
  ImapCommand& raw(std::string_view text);
  // Appends an astring: atom when safe, else quoted, else literal.
  ImapCommand& astring(std::string_view text);
  // Appends a quoted string or literal, never an atom (mailbox names go here too).
  ImapCommand& string(std::string_view text);
  // Appends text right after the previous argument, with no space: the ")" that closes
  // a list whose last item is a string or literal.
  ImapCommand& attached(std::string_view text);

  // The bytes to send, tagged. Without LITERAL+, a literal must wait for the server's
  // continuation: parts[0] is sent first and each further part only after a "+"
  // response. With literal_plus, literals are non-synchronising ({n+}) and there is a
  // single part. Each command ends with CRLF in the last part.
  std::vector<std::string> render(std::string_view tag, bool literal_plus) const;

  std::string_view verb() const { return verb_; }

 private:
  struct Argument {
    enum class Kind { kRaw, kAttached, kAtom, kQuoted, kLiteral } kind;
    std::string text;
  };
  std::string verb_;
  std::vector<Argument> arguments_;
};

// "1:3,5,9:12" for ascending, de-duplicated UIDs.
std::string compress_uid_set(const std::vector<unsigned>& sorted_uids);

}  // namespace popbridge::protocol
