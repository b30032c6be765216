// SPDX-License-Identifier: Apache-2.0
// JmapMailStore::fetch_batch: read-ahead over JMAP. HTTP/1.1 answers one request at a time
// on a connection, and JMAP has no download of several blobs at once, so the batch's blobs
// are downloaded side by side on a few connections (the worker's kept ones when it has
// them): the round trips overlap instead of following one another.
#include <string>
#include <utility>

#include "proxy/mailstore/jmap/jmap_mail_store.h"

namespace popbridge::proxy {
namespace {

// Connections one session's read-ahead uses at once: enough to overlap the round trips of
// a batch of small messages, few enough not to look like a flood to the server.
constexpr std::size_t kParallelDownloads = JmapMailStore::kParallelDownloads;
// Messages in one batch: the session waits for the whole batch before its next command,
// so a batch stays at two rounds of downloads, whatever the read-ahead budget allows.
constexpr std::size_t kMaxBatch = 2 * kParallelDownloads;

}  // namespace

void JmapMailStore::fetch_batch(std::vector<BatchItem> items, BatchSink& sink, Done done) {
  batch_.clear();
  batch_sink_ = &sink;
  batch_done_ = std::move(done);
  batch_started_ = 0;
  batch_running_ = 0;
  for (const BatchItem& item : items) {
    if (batch_.size() == kMaxBatch) {
      break;  // the rest are fetched by their RETRs, or by the next batch
    }
    if (item.uid >= 1 && item.uid <= emails_.size()) {
      batch_.push_back(std::make_unique<JmapBatchDownload>(item));
    }
  }
  if (batch_.empty()) {
    later([this] {
      Done finished = std::move(batch_done_);
      batch_done_ = nullptr;
      batch_sink_ = nullptr;
      if (finished) {
        finished({StoreStatus::kOk, {}});
      }
    });
    return;
  }
  start_downloads();
}

void JmapMailStore::start_downloads() {
  while (batch_running_ < kParallelDownloads && batch_started_ < batch_.size()) {
    const std::size_t index = batch_started_++;
    ++batch_running_;
    JmapBatchDownload& download = *batch_[index];
    download.start(http_, download_request(emails_[download.item().uid - 1]),
                   [this, index](HttpResult result) { downloaded(index, result); });
  }
}

void JmapMailStore::downloaded(std::size_t index, const HttpResult& result) {
  --batch_running_;
  JmapBatchDownload& download = *batch_[index];
  std::string& octets = download.octets();
  bytes_received_ += octets.size() + result.body.size();
  // Whole means every octet the snapshot listed, in a complete 200 answer: anything else
  // is left for the RETR, which fetches it again and reports what is wrong.
  if (result.ok() && result.status == 200 && result.streamed &&
      octets.size() == download.item().listed_size) {
    batch_sink_->on_batch_message_begin(download.item().uid, octets.size());
    batch_sink_->on_batch_message_data(octets);
    batch_sink_->on_batch_message_end(true);
  }
  std::string().swap(octets);
  if (!result.ok() || result.status == 401 || result.status == 429 || result.status == 503) {
    // Broken, refused or asked to back off: the downloads not yet started are left to
    // their RETRs, which report the trouble to the client.
    if (result.ok()) {
      http_failure(result, "a read-ahead download");  // counted, and a Retry-After honoured
    }
    batch_started_ = batch_.size();
  }
  start_downloads();
  if (batch_running_ > 0) {
    return;
  }
  // finished may re-enter fetch_batch() or close(), which clear batch_: nothing after it
  // may touch the batch.
  Done finished = std::move(batch_done_);
  batch_done_ = nullptr;
  batch_sink_ = nullptr;
  if (finished) {
    finished({StoreStatus::kOk, {}});
  }
}

}  // namespace popbridge::proxy
