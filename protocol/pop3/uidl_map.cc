// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/uidl_map.h"

#include <algorithm>
#include <charconv>
#include <unordered_set>

#include "protocol/pop3/uidl_template.h"

namespace popbridge::protocol {

namespace {

bool blank(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view text) {
  while (!text.empty() && (blank(text.front()) || text.front() == '\r')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (blank(text.back()) || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  return text;
}

bool parse_number(std::string_view text, std::uint32_t& out) {
  const char* last = text.data() + text.size();
  const auto [end, status] = std::from_chars(text.data(), last, out);
  return status == std::errc() && end == last && !text.empty();
}

}  // namespace

UidlMapParse parse_uidl_map(std::string_view text) {
  UidlMapParse result;
  UidlMap map;
  bool have_validity = false;
  std::unordered_set<std::string> seen;
  std::size_t line_number = 0;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    const std::string_view line = trim(text.substr(0, end));
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    ++line_number;
    if (line.empty() || line.front() == '#') {
      continue;
    }
    const std::size_t gap = line.find_first_of(" \t");
    const std::string_view first = line.substr(0, gap);
    const std::string_view second =
        gap == std::string_view::npos ? std::string_view() : trim(line.substr(gap + 1));
    const std::string where = "line " + std::to_string(line_number) + ": ";
    if (!have_validity) {
      if (first != "uidvalidity" || !parse_number(second, map.uidvalidity) ||
          map.uidvalidity == 0) {
        result.problems.push_back(where + "expected \"uidvalidity N\" first");
        return result;
      }
      have_validity = true;
      continue;
    }
    std::uint32_t uid = 0;
    if (!parse_number(first, uid) || uid == 0) {
      result.problems.push_back(where + "expected a UID and a UIDL");
      continue;
    }
    if (!valid_uidl(second)) {
      result.problems.push_back(where + "not a UIDL (1-70 printable characters, no blanks)");
      continue;
    }
    if (map.uidls.count(uid) != 0) {
      result.problems.push_back(where + "UID " + std::to_string(uid) + " again");
      continue;
    }
    if (!seen.insert(std::string(second)).second) {
      // Two messages with one UIDL: a client would take them for one. The later gets a
      // fresh UIDL instead (downloaded again, never lost).
      result.problems.push_back(where + "UIDL " + std::string(second) + " again");
      continue;
    }
    map.uidls.emplace(uid, std::string(second));
  }
  if (!have_validity) {
    result.problems.push_back("expected \"uidvalidity N\" first");
    return result;
  }
  result.map = std::move(map);
  return result;
}

std::string format_uidl_map(const UidlMap& map) {
  std::vector<std::pair<std::uint32_t, std::string_view>> lines(map.uidls.begin(), map.uidls.end());
  std::sort(lines.begin(), lines.end());
  std::string out = "uidvalidity " + std::to_string(map.uidvalidity) + "\n";
  for (const auto& [uid, uidl] : lines) {
    out += std::to_string(uid) + " " + std::string(uidl) + "\n";
  }
  return out;
}

}  // namespace popbridge::protocol
