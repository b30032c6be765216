// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "protocol/common/secret.h"
#include "protocol/http/http_response.h"
#include "protocol/jmap/jmap.h"
#include "proxy/base/uv_handle.h"
#include "proxy/mailstore/jmap/jmap_batch_download.h"
#include "proxy/mailstore/jmap/jmap_worker_cache.h"
#include "proxy/mailstore/mail_store.h"
#include "proxy/net/http_client.h"

namespace popbridge::proxy {

// A mailbox on a JMAP server (RFC 8620, RFC 8621), behind MailStore.
//
//   open     GET the session resource (redirects within its origin followed) with HTTP
//            Basic, or Bearer for a token (nothing while a Retry-After holds logins
//            back); Mailbox/get to find the mailbox; then pages of Email/query (oldest
//            first) + Email/get (id, blobId, size) by back-reference, one request a page;
//            or, for a user the worker cache knows, Mailbox/get and the first page in one
//            request, checked against what it recalled
//   fetch    GET the blob from the downloadUrl, streamed to the sink with backpressure;
//            for TOP the download stops once the sink has its lines
//   commit   by upstream.on_delete: expunge: Email/set destroy; move: Email/set moving
//            them in one patch of mailboxIds (Mailbox/set creates the folder on first
//            use); hide: Email/set keyword (the snapshot leaves such messages out); keep:
//            nothing
//
// POP3 numbers the snapshot in the query's order; the store numbers the same messages
// 1..n as their "uid". A message's UIDL is its Email id (protocol::jmap::uidl_for).
// HTTP holds no session open between operations, so nothing is lost while idle and the
// observer is never called. The worker's JmapWorkerCache keeps connections alive from one
// POP3 session to the next, and remembers where a user's mailbox was: the same user's next
// open is one request (Mailbox/get and the first page), checked against what it recalled.
class JmapMailStore final : public MailStore, protocol::HttpBodyReceiver {
 public:
  JmapMailStore(uv_loop_t* loop, const config::Upstream& settings, SSL_CTX* tls_context,
                metrics::Metrics& metrics, MailStore::Observer& observer,
                JmapWorkerCache* worker_cache = nullptr);

  void open(OpenRequest request, Opened done) override;
  void fetch(std::uint32_t uid, std::uint64_t listed_size, FetchPart part, MessageSink& sink,
             Done done) override;
  // Read-ahead: the batch's blobs downloaded side by side, kParallelDownloads at a time
  // (jmap_mail_store_batch.cc).
  static constexpr std::size_t kParallelDownloads = 4;
  bool fetches_in_batches() const override { return true; }
  void fetch_batch(std::vector<BatchItem> items, BatchSink& sink, Done done) override;
  void keep_alive(Done done) override;
  void commit(std::vector<std::uint32_t> deleted, Done done) override;
  void pause_reading() override { request_.pause_reading(); }
  void resume_reading() override { request_.resume_reading(); }
  void close(bool graceful) override;
  bool usable() const override { return opened_ok_ && !closed_; }
  std::optional<bool> accepts(UpstreamCredentials::Mechanism mechanism) const override;
  std::uint64_t bytes_received() const override { return bytes_received_; }
  std::uint64_t bytes_sent() const override { return bytes_sent_; }
  std::string tls_summary() const override;

 private:
  // What an API call or a download answered, as the store's vocabulary plus the body.
  using Answer = std::function<void(const StoreResult& result, std::string body)>;

  // protocol::HttpBodyReceiver, for downloads
  bool on_response_head(int status, const std::vector<protocol::HttpHeader>& headers) override;
  bool on_body_data(std::string_view data) override;

  HttpRequest request_to(std::string method, std::string url, std::string body = {}) const;
  // GET of the message's blob; the caller sets the body receiver.
  HttpRequest download_request(const protocol::jmap::Email& email) const;
  void get_session(std::string url, int redirects_left);
  void call(std::string body, Answer answer);
  void read_mailboxes();
  // open from what the worker cache recalled; opens afresh where the server disagrees
  void open_known();
  std::string_view wanted_mailbox() const {
    return open_request_.mailbox ? *open_request_.mailbox : settings_.mailbox;
  }
  // on_delete: hide leaves messages with this keyword out of the snapshot
  std::string_view hidden_keyword() const {
    return settings_.on_delete.action == config::DeleteAction::kHide ? settings_.on_delete.keyword
                                                                     : std::string_view();
  }
  void read_page(std::uint64_t position);
  void take_page(std::uint64_t position, protocol::jmap::EmailPage page);
  void opened(const StoreResult& result);
  void fetched(const HttpResult& result);
  void start_downloads();
  void downloaded(std::size_t index, const HttpResult& result);
  void commit_move();
  void commit_batch(std::size_t offset);
  void committed(const StoreResult& result);
  // An HTTP answer that is not a success, or a transport failure, in the store's terms.
  StoreResult http_failure(const HttpResult& result, std::string_view what);
  StoreResult jmap_failure(const protocol::jmap::Failure& failure, std::string_view what) const;
  // A 429 or 503 said when to come back: logins to this upstream wait until then.
  void hold_off(std::string_view retry_after) const;
  // Completes on the next loop turn, as every operation does.
  void later(std::function<void()> then);

  const config::Upstream& settings_;
  metrics::Metrics& metrics_;
  JmapWorkerCache* worker_cache_;         // may be null
  std::unique_ptr<HttpClient> own_http_;  // without a worker cache only
  HttpClient& http_;
  HttpClient::RequestHandle request_;
  Timer later_;
  bool closed_ = false;
  bool opened_ok_ = false;
  bool reached_ = false;  // the server answered HTTP at all
  std::uint64_t bytes_received_ = 0;
  std::uint64_t bytes_sent_ = 0;

  // open
  OpenRequest open_request_;
  Opened opened_done_;
  protocol::Secret authorization_;        // the Authorization header's value
  std::string session_url_;               // after redirects: relative URLs resolve against it
  std::optional<std::string> known_key_;  // the worker cache's key for this user and mailbox
  bool recalled_ = false;                 // this open began from the worker cache
  protocol::jmap::Session session_;
  std::string api_url_;
  std::vector<protocol::jmap::Mailbox> mailboxes_;  // for on_delete: move
  std::string mailbox_id_;
  std::string query_state_;
  int restarts_ = 0;  // the mailbox changed while it was read page by page
  std::uint64_t started_ns_ = 0;
  std::vector<protocol::jmap::Email> emails_;  // emails_[uid - 1]

  // fetch
  MessageSink* sink_ = nullptr;
  Done fetch_done_;
  FetchPart part_ = FetchPart::kWhole;
  std::uint32_t uid_ = 0;
  std::uint64_t delivered_ = 0;
  bool begun_ = false;
  bool enough_ = false;

  // fetch_batch
  std::vector<std::unique_ptr<JmapBatchDownload>> batch_;
  BatchSink* batch_sink_ = nullptr;
  Done batch_done_;
  std::size_t batch_started_ = 0;
  std::size_t batch_running_ = 0;

  // commit
  std::vector<std::string> deleting_;
  protocol::jmap::Removal removal_;
  Done commit_done_;
};

}  // namespace popbridge::proxy
