// SPDX-License-Identifier: Apache-2.0
#include "protocol/common/header_field.h"

#include "protocol/common/ascii.h"

namespace popbridge::protocol {

namespace {

bool blank(char c) { return c == ' ' || c == '\t'; }

// One physical line without its line end; `rest` moves past the line end.
std::string_view next_line(std::string_view& rest) {
  const std::size_t end = rest.find('\n');
  std::string_view line = rest.substr(0, end);
  rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
  if (!line.empty() && line.back() == '\r') {
    line.remove_suffix(1);
  }
  return line;
}

std::string trimmed(std::string text) {
  std::size_t begin = 0;
  while (begin < text.size() && blank(text[begin])) {
    ++begin;
  }
  std::size_t end = text.size();
  while (end > begin && blank(text[end - 1])) {
    --end;
  }
  return text.substr(begin, end - begin);
}

}  // namespace

std::optional<std::string> first_header_field(std::string_view header, std::string_view name) {
  std::string_view rest = header;
  while (!rest.empty()) {
    const std::string_view line = next_line(rest);
    if (line.empty()) {
      break;  // the end of the header section
    }
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || blank(line[0])) {
      continue;  // a continuation of another field, or not a field at all
    }
    std::string_view field = line.substr(0, colon);
    while (!field.empty() && blank(field.back())) {
      field.remove_suffix(1);  // "X-UIDL :" as some old software wrote it
    }
    if (!equals_ignoring_ascii_case(field, name)) {
      continue;
    }
    std::string value(line.substr(colon + 1));
    while (!rest.empty() && blank(rest[0])) {
      value += next_line(rest);  // unfolded: the line break goes, the blank stays
    }
    return trimmed(std::move(value));
  }
  return std::nullopt;
}

}  // namespace popbridge::protocol
