// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/common/digest.h"  // md5_hex, part of this codec's interface

namespace popbridge::protocol {

// What a UIDL template can refer to, for one message.
struct UidlFields {
  std::uint32_t uid = 0;
  std::uint32_t uidvalidity = 0;
  std::string_view guid;  // %g: OBJECTID EMAILID or Dovecot's X-GUID; empty if unknown
  std::string_view md5;   // %m: hex MD5 of the header section; empty if unknown
};

// A UIDL template in the syntax of Dovecot 2.3's pop3_uidl_format (its var_expand), so an
// administrator can copy the old server's setting and clients keep their download state:
//
//   %[-][0][width][.[0][-][width]][modifiers]variable      "%%" is a literal "%"
//
// variables: u / {uid}, v / {uidvalidity}, g / {guid}, m / {md5}
// modifiers, applied left to right: X (decimal to lower-case hex, as Dovecot's %llx),
//   L (lower case), U (upper case), R (reverse), T (trim trailing blanks), M (MD5, hex)
// A leading "0" on the width pads with zeros on the left and never truncates; a width
// without it truncates (a negative one drops that many characters from the end). The part
// before "." is an offset into the value (negative: from the end).
//
// Dovecot 2.4's form is accepted too: %{uid | hex(8)}%{uidvalidity | hex(8)} (filters hex,
// hex(N), lower, upper, md5). Both versions' defaults print the same lower-case UIDLs.
//
// Parsed once (at configuration time); render() does no parsing.
class UidlTemplate {
 public:
  // The presets: Dovecot 2.3's default, and "<uidvalidity>.<uid>" (Cyrus and others).
  static constexpr std::string_view kDovecot = "%08Xu%08Xv";
  static constexpr std::string_view kUid = "%v.%u";

  // Null and *error set when the template is not valid.
  static std::optional<UidlTemplate> parse(std::string_view text, std::string* error);

  std::string render(const UidlFields& fields) const;
  // The same, appended to out: a listing of thousands of messages renders without a
  // string per message.
  void render_to(const UidlFields& fields, std::string& out) const;
  bool needs_guid() const { return needs_guid_; }
  bool needs_md5() const { return needs_md5_; }
  // Within one mailbox (one UIDVALIDITY) no two UIDs render alike: the UID appears in
  // full and nothing else varies per message. Then no duplicate check is needed.
  bool unique_per_uid() const;
  const std::string& text() const { return text_; }

 private:
  enum class Variable : std::uint8_t { kUid, kUidValidity, kGuid, kMd5 };
  enum class Modifier : std::uint8_t { kHex, kLower, kUpper, kReverse, kTrim, kMd5 };
  static std::optional<Modifier> modifier_of(char letter);
  struct Piece {
    std::string literal;  // text before the variable (or the whole piece when last)
    bool has_variable = false;
    Variable variable = Variable::kUid;
    std::vector<Modifier> modifiers;
    int offset = 0;
    int width = 0;
    bool zero_padding = false;
    bool keep_last = false;  // Dovecot 2.4 hex(N): the last N characters
  };
  static bool parse_filters(std::string_view& name, Piece& piece, std::string& why);

  std::string text_;
  std::vector<Piece> pieces_;
  bool needs_guid_ = false;
  bool needs_md5_ = false;
};

// RFC 1939 §7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
bool valid_uidl(std::string_view uidl);

// A UIDL a client can take: the value itself when valid, else the hex MD5 of it (stable,
// 32 characters), so an over-long or blank-containing X-UIDL header or GUID still gives a
// usable, repeatable UIDL.
std::string sanitize_uidl(std::string_view uidl);

}  // namespace popbridge::protocol
