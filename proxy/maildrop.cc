#include "proxy/maildrop.h"

#include <algorithm>
#include <cstdio>

namespace popbridge::proxy {

Maildrop::Maildrop(std::vector<Message> messages, std::uint32_t uidvalidity,
                   config::UidlFormat format)
    : messages_(std::move(messages)), uidvalidity_(uidvalidity), format_(format) {
  std::stable_sort(messages_.begin(), messages_.end(),
                   [](const Message& a, const Message& b) { return a.uid < b.uid; });
  messages_.erase(std::unique(messages_.begin(), messages_.end(),
                              [](const Message& a, const Message& b) { return a.uid == b.uid; }),
                  messages_.end());
}

std::size_t Maildrop::visible_count() const {
  return static_cast<std::size_t>(std::count_if(messages_.begin(), messages_.end(),
                                                [](const Message& m) { return !m.deleted; }));
}

std::uint64_t Maildrop::visible_octets() const {
  std::uint64_t total = 0;
  for (const Message& message : messages_) {
    if (!message.deleted) {
      total += message.size;
    }
  }
  return total;
}

const Maildrop::Message* Maildrop::find(std::uint32_t number) const {
  if (number == 0 || number > messages_.size()) {
    return nullptr;
  }
  const Message& message = messages_[number - 1];
  return message.deleted ? nullptr : &message;
}

bool Maildrop::mark_deleted(std::uint32_t number) {
  if (find(number) == nullptr) {
    return false;
  }
  messages_[number - 1].deleted = true;
  return true;
}

void Maildrop::reset() {
  for (Message& message : messages_) {
    message.deleted = false;
  }
}

std::vector<std::uint32_t> Maildrop::deleted_uids() const {
  std::vector<std::uint32_t> uids;
  for (const Message& message : messages_) {
    if (message.deleted) {
      uids.push_back(message.uid);
    }
  }
  return uids;
}

std::string Maildrop::uidl(const Message& message) const {
  char buffer[32];
  if (format_ == config::UidlFormat::kDovecot) {
    // Dovecot's default pop3_uidl_format %08Xu%08Xv, so clients migrating from Dovecot's
    // own POP3 server keep their download state.
    std::snprintf(buffer, sizeof(buffer), "%08X%08X", message.uid, uidvalidity_);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%u.%u", uidvalidity_, message.uid);
  }
  return buffer;
}

}  // namespace popbridge::proxy
