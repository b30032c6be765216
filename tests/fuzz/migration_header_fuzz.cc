// SPDX-License-Identifier: Apache-2.0
// Arbitrary text as a header section for uidl-import's header hash; the hash must not
// depend on line ends, as the old server and the upstream may differ there.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/pop3/migration_match.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string hash = popbridge::protocol::migration_header_hash(text);
  if (hash.size() != 64) {
    std::abort();
  }
  if (text.find('\r') == std::string_view::npos) {
    std::string crlf;
    for (char c : text) {
      if (c == '\n') {
        crlf.push_back('\r');
      }
      crlf.push_back(c);
    }
    if (popbridge::protocol::migration_header_hash(crlf) != hash) {
      std::abort();
    }
  }
  return 0;
}
