// SPDX-License-Identifier: Apache-2.0
#include "proxy/pop3/mailbox_history.h"

namespace popbridge::proxy {

std::optional<std::uint32_t> MailboxHistory::record(const std::string& user,
                                                    std::uint32_t uidvalidity) {
  std::lock_guard lock(mutex_);
  auto [entry, inserted] = uidvalidity_.try_emplace(user, uidvalidity);
  if (inserted) {
    if (uidvalidity_.size() > kMaxUsers) {
      // Forget another user rather than grow without bound: at worst one change unseen.
      uidvalidity_.erase(uidvalidity_.begin() == entry ? std::next(entry) : uidvalidity_.begin());
    }
    return std::nullopt;
  }
  if (entry->second == uidvalidity) {
    return std::nullopt;
  }
  const std::uint32_t before = entry->second;
  entry->second = uidvalidity;
  return before;
}

}  // namespace popbridge::proxy
