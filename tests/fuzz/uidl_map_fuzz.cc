// SPDX-License-Identifier: Apache-2.0
// Reads arbitrary text as a UIDL map file (upstream.uidl_map comes from a migration
// tool, or an administrator's editor) and checks what it accepts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/pop3/uidl_map.h"
#include "protocol/pop3/uidl_template.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const popbridge::protocol::UidlMapParse parsed = popbridge::protocol::parse_uidl_map(text);
  if (parsed.map) {
    for (const auto& [uid, uidl] : parsed.map->uidls) {
      if (uid == 0 || !popbridge::protocol::valid_uidl(uidl)) {
        std::abort();  // only valid UIDLs for real UIDs get through
      }
    }
    // What format_uidl_map writes reads back as the same map, without a problem.
    const popbridge::protocol::UidlMapParse again =
        popbridge::protocol::parse_uidl_map(popbridge::protocol::format_uidl_map(*parsed.map));
    if (!again.map || !again.problems.empty() || again.map->uidls != parsed.map->uidls ||
        again.map->uidvalidity != parsed.map->uidvalidity) {
      std::abort();
    }
  }
  return 0;
}
