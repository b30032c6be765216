// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace popbridge::protocol {

std::string base64_encode(std::string_view data);
// Strict RFC 4648 decoding (no whitespace, '=' only as final padding, length a multiple of
// 4); nullopt for anything else, as RFC 5034 requires.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace popbridge::protocol
