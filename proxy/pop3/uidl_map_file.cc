// SPDX-License-Identifier: Apache-2.0
#include "proxy/pop3/uidl_map_file.h"

#include <cerrno>
#include <fstream>
#include <sstream>
#include <system_error>

namespace popbridge::proxy {

namespace {

// A map lists one line per message: 4 MiB covers some 80,000 messages and stops a wrong
// file (a mailbox, a log) from being read whole at every login.
constexpr std::streamoff kMaxMapBytes = 4 * 1024 * 1024;

bool plain(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '@' ||
         c == '.' || c == '_' || c == '+' || c == '-';
}

}  // namespace

std::string uidl_map_file_name(const std::string& user) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string name;
  for (std::size_t i = 0; i < user.size(); ++i) {
    const char c = user[i];
    if (plain(c) && !(i == 0 && c == '.')) {
      name.push_back(c);
    } else {
      const auto byte = static_cast<unsigned char>(c);
      name.push_back('%');
      name.push_back(kHex[byte >> 4]);
      name.push_back(kHex[byte & 0xf]);
    }
  }
  return name;
}

UidlMapRead read_uidl_map_file(const std::string& directory, const std::string& user) {
  UidlMapRead result;
  const std::string path = directory + "/" + uidl_map_file_name(user);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    if (errno != ENOENT) {
      result.found = true;
      result.problem = "cannot read " + path + ": " + std::generic_category().message(errno);
    }
    return result;
  }
  result.found = true;
  const std::streamoff size = in.tellg();
  if (size > kMaxMapBytes) {
    result.problem = path + " is larger than 4 MiB";
    return result;
  }
  in.seekg(0);
  std::ostringstream text;
  text << in.rdbuf();
  return read_uidl_map_text(text.str(), path);
}

UidlMapRead read_uidl_map_text(std::string_view text, const std::string& origin) {
  UidlMapRead result;
  result.found = true;
  protocol::UidlMapParse parsed = protocol::parse_uidl_map(text);
  for (const std::string& problem : parsed.problems) {
    result.problem += (result.problem.empty() ? origin + ": " : "; ") + problem;
  }
  result.map = std::move(parsed.map);
  return result;
}

}  // namespace popbridge::proxy
