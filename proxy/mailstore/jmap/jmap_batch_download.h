// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/http/http_response.h"
#include "proxy/mailstore/mail_store.h"
#include "proxy/net/http_client.h"

namespace popbridge::proxy {

// One blob of a JMAP read-ahead batch (JmapMailStore::fetch_batch), collected whole before
// it is handed on: read-ahead batches are small (limits.read_ahead), the sink takes one
// message at a time, and the downloads run side by side. Dropping it cancels the download.
class JmapBatchDownload final : public protocol::HttpBodyReceiver {
 public:
  explicit JmapBatchDownload(BatchItem item) : item_(item) {}

  const BatchItem& item() const { return item_; }
  std::string& octets() { return octets_; }
  void start(HttpClient& http, HttpRequest request, HttpClient::Callback done) {
    request.body_receiver = this;
    request_ = http.request(std::move(request), std::move(done));
  }

 private:
  bool on_response_head(int status, const std::vector<protocol::HttpHeader>& /*headers*/) override {
    return status == 200;  // anything else is collected as an error page, and not served
  }
  bool on_body_data(std::string_view data) override {
    if (octets_.size() + data.size() > item_.listed_size) {
      return false;  // not the size the snapshot listed: the RETR will fetch and say so
    }
    octets_.append(data);
    return true;
  }

  BatchItem item_;
  std::string octets_;
  HttpClient::RequestHandle request_;
};

}  // namespace popbridge::proxy
