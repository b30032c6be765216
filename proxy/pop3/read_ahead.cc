// SPDX-License-Identifier: Apache-2.0
#include "proxy/pop3/read_ahead.h"

#include "protocol/common/invariant.h"

namespace popbridge::proxy {

void ReadAhead::start(MailStore& store, std::uint32_t uid, std::uint64_t listed_size,
                      std::function<void()> settled) {
  // The caller dropped what was held (and counted it); the store runs one operation.
  POPBRIDGE_INVARIANT(!in_flight_ && !whole_);
  too_large_ = false;
  size_.reset();
  octets_.clear();
  in_flight_ = true;
  uid_ = uid;
  settled_ = std::move(settled);
  const std::uint64_t generation = ++generation_;
  MessageSink& sink = *this;
  store.fetch(uid, listed_size, FetchPart::kWhole, sink,
              [this, generation](const StoreResult& result) {
                if (generation == generation_) {
                  settle(result);
                }
              });
}

void ReadAhead::on_message_begin(std::optional<std::uint64_t> whole_size) {
  size_ = whole_size;
  // The listed size fitted; the real one is what the store is about to send.
  too_large_ = whole_size && *whole_size > max_size_;
  if (!too_large_ && whole_size) {
    octets_.reserve(static_cast<std::size_t>(*whole_size));
  }
}

bool ReadAhead::on_message_data(std::string_view chunk) {
  if (too_large_ || octets_.size() + chunk.size() > max_size_) {
    too_large_ = true;
    std::string().swap(octets_);
    return false;  // nothing more is wanted; the RETR will fetch it itself
  }
  octets_.append(chunk);
  return true;
}

void ReadAhead::settle(const StoreResult& result) {
  in_flight_ = false;
  // ok means the store confirmed every octet; a size it announced must match too.
  whole_ = result.ok() && !too_large_ && (!size_ || *size_ == octets_.size());
  if (!whole_) {
    std::string().swap(octets_);
  }
  std::function<void()> settled = std::move(settled_);
  settled_ = nullptr;
  if (settled) {
    settled();
  }
}

std::optional<ReadAhead::Message> ReadAhead::take(std::uint32_t uid) {
  if (in_flight_ || !whole_ || uid != uid_) {
    return std::nullopt;
  }
  Message message{octets_.size(), std::move(octets_)};
  whole_ = false;
  octets_ = {};
  size_.reset();
  return message;
}

bool ReadAhead::drop() {
  const bool unused = whole_;
  if (!in_flight_) {
    whole_ = false;
    too_large_ = false;
    size_.reset();
    std::string().swap(octets_);
  }
  return unused;
}

void ReadAhead::abandon() {
  ++generation_;
  in_flight_ = false;
  settled_ = nullptr;
  drop();
}

}  // namespace popbridge::proxy
