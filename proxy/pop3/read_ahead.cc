// SPDX-License-Identifier: Apache-2.0
#include "proxy/pop3/read_ahead.h"

#include <algorithm>

#include "protocol/common/invariant.h"

namespace popbridge::proxy {

void ReadAhead::start(MailStore& store, std::uint32_t uid, std::uint64_t listed_size,
                      std::function<void()> settled) {
  // The caller dropped what was held (and counted it); the store runs one operation.
  POPBRIDGE_INVARIANT(!in_flight_ && held_.empty());
  in_flight_ = true;
  uid_ = uid;
  settled_ = std::move(settled);
  const std::uint64_t generation = ++generation_;
  MessageSink& sink = *this;
  store.fetch(uid, listed_size, FetchPart::kWhole, sink,
              [this, generation](const StoreResult& result) {
                if (generation == generation_) {
                  if (result.ok()) {
                    end(true);  // the store confirmed every octet
                  }
                  settle(result);
                }
              });
}

void ReadAhead::start_batch(MailStore& store, std::vector<BatchItem> items,
                            std::function<void()> settled) {
  POPBRIDGE_INVARIANT(!in_flight_ && held_.empty());
  in_flight_ = true;
  settled_ = std::move(settled);
  const std::uint64_t generation = ++generation_;
  BatchSink& sink = *this;
  store.fetch_batch(std::move(items), sink, [this, generation](const StoreResult& result) {
    if (generation == generation_) {
      settle(result);
    }
  });
}

void ReadAhead::begin(std::uint32_t uid, std::optional<std::uint64_t> size) {
  uid_ = uid;
  size_ = size;
  octets_.clear();
  // The listed sizes fitted; the real ones are what the store is about to send.
  too_large_ = size && arrived_octets_ + *size > max_size_;
  if (!too_large_ && size) {
    octets_.reserve(static_cast<std::size_t>(*size));
  }
}

bool ReadAhead::append(std::string_view chunk) {
  if (too_large_ || arrived_octets_ + octets_.size() + chunk.size() > max_size_) {
    too_large_ = true;
    std::string().swap(octets_);
    return false;  // nothing more is wanted; the RETR will fetch it itself
  }
  octets_.append(chunk);
  return true;
}

void ReadAhead::end(bool whole) {
  // A size the store announced must match what arrived.
  if (whole && !too_large_ && (!size_ || *size_ == octets_.size())) {
    arrived_octets_ += octets_.size();
    arrived_.push_back({uid_, std::move(octets_)});
  }
  octets_ = {};
  size_.reset();
  too_large_ = false;
}

void ReadAhead::on_message_begin(std::optional<std::uint64_t> whole_size) {
  begin(uid_, whole_size);
}

bool ReadAhead::on_message_data(std::string_view chunk) { return append(chunk); }

void ReadAhead::on_batch_message_begin(std::uint32_t uid, std::uint64_t size) { begin(uid, size); }

void ReadAhead::on_batch_message_data(std::string_view chunk) { append(chunk); }

void ReadAhead::on_batch_message_end(bool whole) { end(whole); }

void ReadAhead::settle(const StoreResult& result) {
  in_flight_ = false;
  // ok means the store confirmed every octet of what it delivered whole.
  if (result.ok()) {
    held_ = std::move(arrived_);
  }
  arrived_.clear();
  arrived_octets_ = 0;
  std::string().swap(octets_);
  std::function<void()> settled = std::move(settled_);
  settled_ = nullptr;
  if (settled) {
    settled();
  }
}

std::optional<ReadAhead::Message> ReadAhead::take(std::uint32_t uid) {
  if (in_flight_) {
    return std::nullopt;
  }
  const auto found =
      std::find_if(held_.begin(), held_.end(), [uid](const Held& held) { return held.uid == uid; });
  if (found == held_.end()) {
    return std::nullopt;
  }
  Message message{found->octets.size(), std::move(found->octets)};
  held_.erase(found);
  return message;
}

std::size_t ReadAhead::drop() {
  const std::size_t unused = held_.size();
  held_.clear();
  held_.shrink_to_fit();
  return unused;
}

void ReadAhead::abandon() {
  ++generation_;
  in_flight_ = false;
  settled_ = nullptr;
  arrived_.clear();
  arrived_octets_ = 0;
  std::string().swap(octets_);
  drop();
}

}  // namespace popbridge::proxy
