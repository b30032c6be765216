// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "proxy/pop3/uidl_map_file.h"

namespace popbridge::proxy {

// upstream.uidl_map.store: metadata: each user's map as last read from the mailbox, so a
// client that polls every minute costs no GETMETADATA each time. An entry holds while
// the mailbox keeps its UIDVALIDITY (a rebuilt mailbox invalidates the map anyway) and
// for at most kLifetime, so a re-run of uidl-import is seen within minutes; a reload
// starts afresh. Shared by every worker; thread-safe.
class UidlMapCache {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kLifetime = std::chrono::minutes(5);
  static constexpr std::size_t kMaxUsers = 100'000;

  struct Entry {
    std::uint32_t uidvalidity = 0;
    std::shared_ptr<const UidlMapRead> read;  // no map is remembered too
    Clock::time_point stored;
  };

  // The user's entry if it is recent enough; the UIDVALIDITY is checked by the caller.
  std::optional<Entry> find(const std::string& key, Clock::time_point now = Clock::now());
  void store(const std::string& key, std::uint32_t uidvalidity, UidlMapRead read,
             Clock::time_point now = Clock::now());

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace popbridge::proxy
