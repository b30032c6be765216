// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace popbridge::protocol {

// How long a Retry-After header (RFC 9110 section 10.2.3) asks to wait, counted from now:
// delta-seconds, or an HTTP-date in any of the three forms a recipient must accept
// (IMF-fixdate, the obsolete RFC 850 form and asctime). A date in the past is zero;
// anything else (a negative or fractional number, a malformed date) is nullopt, so a
// bad header never holds logins back. Longer waits are capped at max_wait.
std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::chrono::system_clock::time_point now,
                                                      std::chrono::seconds max_wait);

}  // namespace popbridge::protocol
