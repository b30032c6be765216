// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace popbridge::protocol {

// The UIDLs an old POP3 server gave a user's messages, for the messages as the upstream
// now holds them: what a client downloaded before the migration keeps its UIDL. One text
// file per user (upstream.uidl_map), written by a migration tool:
//
//   # comments and blank lines are ignored
//   uidvalidity 1796454268
//   1 AAAA0001-old-uidl
//   7 0000000a4b3c2d1e
//
// "uidvalidity N" comes first; then "UID UIDL" per message, separated by one space or
// tab. The map holds only for that UIDVALIDITY: any other means the mailbox was rebuilt
// and its UIDs no longer name the same messages.
struct UidlMap {
  std::uint32_t uidvalidity = 0;
  std::unordered_map<std::uint32_t, std::string> uidls;
};

struct UidlMapParse {
  std::optional<UidlMap> map;  // nullopt when the file is unusable (no uidvalidity line)
  // "line N: why", for lines left out (a bad UID, an invalid or repeated UIDL).
  std::vector<std::string> problems;
};

UidlMapParse parse_uidl_map(std::string_view text);
// The file's text for a map, lines in UID order.
std::string format_uidl_map(const UidlMap& map);

}  // namespace popbridge::protocol
