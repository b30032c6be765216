// SPDX-License-Identifier: Apache-2.0
#include "proxy/pop3/maildrop.h"

#include <algorithm>
#include <numeric>
#include <unordered_map>

#include "protocol/common/invariant.h"

namespace popbridge::proxy {

Maildrop::Maildrop(std::vector<Message> messages, std::vector<std::string> guids,
                   std::uint32_t uidvalidity, const protocol::UidlTemplate& format,
                   std::vector<std::optional<std::string>> reused)
    : uidvalidity_(uidvalidity), format_(&format) {
  std::vector<std::size_t> order(messages.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return messages[a].uid < messages[b].uid; });
  const bool with_guids = format.needs_guid() && guids.size() == messages.size();
  const bool with_reused =
      reused.size() == messages.size() &&
      std::any_of(reused.begin(), reused.end(), [](const auto& uidl) { return uidl.has_value(); });
  for (std::size_t index : order) {
    if (!messages_.empty() && messages_.back().uid == messages[index].uid) {
      continue;
    }
    messages_.push_back(messages[index]);
    if (with_guids) {
      guids_.push_back(std::move(guids[index]));
    }
    if (with_reused) {
      reused_.push_back(std::move(reused[index]));
    }
  }
  // Only a format that can repeat needs the check: UID and UIDVALIDITY in full are unique
  // (but a UIDL taken from a message can be anything).
  if (format.unique_per_uid() && reused_.empty()) {
    return;
  }
  std::unordered_map<std::string, std::uint32_t> seen;
  seen.reserve(messages_.size());
  for (std::size_t i = 0; i < messages_.size(); ++i) {
    auto [it, inserted] = seen.try_emplace(base_uidl(i), 1);
    if (!inserted) {
      duplicates_.emplace_back(i, ++it->second);
    }
  }
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

std::uint64_t Maildrop::total_octets() const {
  std::uint64_t total = 0;
  for (const Message& message : messages_) {
    total += message.size;
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

std::string Maildrop::base_uidl(std::size_t index) const {
  // An empty X-UIDL is no UIDL (Dovecot 2.3 prints it as an empty one): the template's.
  if (!reused_.empty() && reused_[index] && !reused_[index]->empty()) {
    return protocol::sanitize_uidl(*reused_[index]);
  }
  return protocol::sanitize_uidl(format_->render(fields_of(index)));
}

protocol::UidlFields Maildrop::fields_of(std::size_t index) const {
  protocol::UidlFields fields;
  fields.uid = messages_[index].uid;
  fields.uidvalidity = uidvalidity_;
  if (!guids_.empty()) {
    fields.guid = guids_[index];
  }
  return fields;
}

std::size_t Maildrop::index_of(const Message& message) const {
  // A Message from another maildrop (an earlier session's) would get a neighbour's UIDL.
  POPBRIDGE_INVARIANT(&message >= messages_.data() &&
                      &message < messages_.data() + messages_.size());
  return static_cast<std::size_t>(&message - messages_.data());
}

const std::uint32_t* Maildrop::rename_suffix(std::size_t index) const {
  const auto found = std::lower_bound(duplicates_.begin(), duplicates_.end(), index,
                                      [](const std::pair<std::size_t, std::uint32_t>& entry,
                                         std::size_t i) { return entry.first < i; });
  return found != duplicates_.end() && found->first == index ? &found->second : nullptr;
}

void Maildrop::append_uidl(const Message& message, std::string& out) const {
  const std::size_t index = index_of(message);
  if (!reused_.empty() || rename_suffix(index) != nullptr) {
    out += uidl(message);  // the rare kinds take the general way
    return;
  }
  const std::size_t start = out.size();
  format_->render_to(fields_of(index), out);
  if (!protocol::valid_uidl(std::string_view(out).substr(start))) {
    const std::string rendered = out.substr(start);
    out.resize(start);
    out += protocol::sanitize_uidl(rendered);
  }
}

std::string Maildrop::uidl(const Message& message) const {
  const std::size_t index = index_of(message);
  std::string uidl = base_uidl(index);
  if (const std::uint32_t* suffix = rename_suffix(index)) {
    uidl = protocol::sanitize_uidl(uidl + "-" + std::to_string(*suffix));
  }
  return uidl;
}

}  // namespace popbridge::proxy
