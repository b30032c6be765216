// SPDX-License-Identifier: Apache-2.0
#pragma once

// Small text helpers shared by the HTTP client's files (internal to proxy/net).

#include <string>
#include <string_view>

namespace popbridge::proxy::http_text {

inline bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// An IPv6 literal as URLs and Host headers write it.
inline std::string bracketed(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace popbridge::proxy::http_text
