// SPDX-License-Identifier: Apache-2.0
#include "proxy/pop3/uidl_map_cache.h"

namespace popbridge::proxy {

std::optional<UidlMapCache::Entry> UidlMapCache::find(const std::string& key,
                                                      Clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto found = entries_.find(key);
  if (found == entries_.end()) {
    return std::nullopt;
  }
  if (now - found->second.stored >= kLifetime) {
    entries_.erase(found);
    return std::nullopt;
  }
  return found->second;
}

void UidlMapCache::store(const std::string& key, std::uint32_t uidvalidity, UidlMapRead read,
                         Clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (entries_.size() >= kMaxUsers && entries_.count(key) == 0) {
    // Full: drop the stale, or else anyone; a miss costs one GETMETADATA, never a wrong UIDL.
    std::erase_if(entries_,
                  [now](const auto& entry) { return now - entry.second.stored >= kLifetime; });
    if (entries_.size() >= kMaxUsers) {
      entries_.erase(entries_.begin());
    }
  }
  entries_[key] = Entry{uidvalidity, std::make_shared<const UidlMapRead>(std::move(read)), now};
}

}  // namespace popbridge::proxy
