// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace popbridge::proxy {

// The UIDVALIDITY each user's mailbox had at their last login, shared by every worker
// of the process. A change means every UIDL built from it changed, so every client of
// that mailbox downloads it all again: worth a warning and a counter. Kept in memory
// only; a restart starts afresh. Thread-safe.
class MailboxHistory {
 public:
  static constexpr std::size_t kMaxUsers = 200'000;  // about 20 MB at most

  // Records this login's UIDVALIDITY; the previous one when it differs.
  std::optional<std::uint32_t> record(const std::string& user, std::uint32_t uidvalidity);

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::uint32_t> uidvalidity_;
};

}  // namespace popbridge::proxy
