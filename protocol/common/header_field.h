// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace popbridge::protocol {

// The value of the first header field called `name` (ASCII case-insensitive) in an RFC
// 5322 header section, as Dovecot's mail_get_first_header() gives it: folding line
// breaks removed, surrounding blanks trimmed. Lines may end in CRLF or bare LF; the
// section ends at the first empty line or with the text. nullopt when there is no such
// field.
std::optional<std::string> first_header_field(std::string_view header, std::string_view name);

}  // namespace popbridge::protocol
