// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>
#include <string_view>

namespace popbridge::testing {

// What a client stores from a RETR or TOP answer: the lines between +OK and the
// terminator, un-stuffed.
inline std::string unstuffed(const std::string& answer) {
  std::string body = answer.substr(answer.find("\r\n") + 2);
  body.resize(body.size() - 3);  // ".\r\n"
  std::string out;
  std::size_t at = 0;
  while (at < body.size()) {
    std::size_t end = body.find("\r\n", at);
    end = end == std::string::npos ? body.size() : end + 2;
    std::string_view line(body.data() + at, end - at);
    out += line.starts_with("..") ? line.substr(1) : line;
    at = end;
  }
  return out;
}

}  // namespace popbridge::testing
