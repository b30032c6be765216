// SPDX-License-Identifier: Apache-2.0
// Read-ahead in batches on IMAP: several whole messages in one UID FETCH, so a client that
// retrieves in order waits one upstream round trip per batch instead of one per message
// (what counts when the upstream is a WAN round trip away).
#include <algorithm>

#include "protocol/imap/imap_writer.h"
#include "proxy/mailstore/imap/imap_mail_store.h"

namespace popbridge::proxy {

void ImapMailStore::fetch_batch(std::vector<BatchItem> items, BatchSink& sink, Done done) {
  std::sort(items.begin(), items.end(),
            [](const BatchItem& a, const BatchItem& b) { return a.uid < b.uid; });
  std::vector<unsigned> uids;
  uids.reserve(items.size());
  for (const BatchItem& item : items) {
    uids.push_back(item.uid);
  }
  batch_items_ = std::move(items);
  batch_sink_ = &sink;
  batch_begun_ = false;
  fetch_done_ = std::move(done);
  reading_ = Reading::kBatch;
  protocol::ImapCommand fetch("UID FETCH");
  // BODY.PEEK: a message read ahead and never asked for must stay unseen.
  fetch.raw(protocol::compress_uid_set(uids)).raw("(BODY.PEEK[])");
  client_->run(fetch, this, [this](const ImapResult& result) {
    if (batch_begun_) {
      batch_message_end();  // cut off inside a message: not whole
    }
    reading_ = Reading::kNone;
    batch_sink_ = nullptr;
    batch_items_.clear();
    Done finished = std::move(fetch_done_);
    fetch_done_ = nullptr;
    if (finished) {
      finished(result.ok() ? StoreResult{StoreStatus::kOk, {}}
                           : failure(result, StoreStatus::kTemporary));
    }
  });
}

void ImapMailStore::batch_fetch_begin(std::uint32_t sequence) {
  // The response is placed by its sequence number, which comes first; the UID item may
  // follow the body, and is then only checked against it.
  batch_uid_ = sequence >= 1 && sequence <= sequence_.size() ? sequence_[sequence - 1] : 0;
  batch_uid_differs_ = false;
  batch_begun_ = false;
  batch_size_listed_ = false;
  batch_literal_whole_ = false;
}

void ImapMailStore::batch_body_begin(std::string_view section, std::uint64_t size) {
  if (!section.empty() || batch_begun_ || batch_uid_differs_) {
    return;
  }
  const auto item = std::find_if(batch_items_.begin(), batch_items_.end(),
                                 [this](const BatchItem& i) { return i.uid == batch_uid_; });
  if (item == batch_items_.end()) {
    return;  // not one we asked for
  }
  batch_begun_ = true;
  batch_size_listed_ = size == item->listed_size;
  batch_sink_->on_batch_message_begin(batch_uid_, size);
}

void ImapMailStore::batch_message_end() {
  if (!batch_begun_) {
    return;
  }
  batch_begun_ = false;
  batch_sink_->on_batch_message_end(batch_literal_whole_ && batch_size_listed_ &&
                                    !batch_uid_differs_);
}

}  // namespace popbridge::proxy
