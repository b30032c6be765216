// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "proxy/mailstore/imap/imap_client.h"
#include "proxy/mailstore/imap/imap_login_pool.h"
#include "proxy/mailstore/mail_store.h"

namespace popbridge::proxy {

// A mailbox on an IMAP server: everything IMAP the POP3 session needs, behind MailStore.
//
//   open     connect, (ID), login, SELECT, UID FETCH 1:* (UID RFC822.SIZE [FLAGS] [GUID]
//            [BODY.PEEK[HEADER.FIELDS (X-UIDL)]])
//            and the restore of what an interrupted commit left marked
//   fetch    UID FETCH uid BODY.PEEK[] (BODY[] with mark_seen); for TOP BODY.PEEK[HEADER]
//            then BODY.PEEK[TEXT]<offset.64K> partials until the sink has its lines
//   commit   by upstream.on_delete: expunge: UID STORE +FLAGS.SILENT (\Deleted
//            $PopbridgePending), then UID EXPUNGE (EXPUNGE only where allowed without
//            UIDPLUS), on a refusal the flags are taken off again; move: UID MOVE, or UID
//            COPY then as expunge (CREATE on TRYCREATE); hide: UID STORE +FLAGS.SILENT
//            (keyword), which the snapshot then leaves out; keep: nothing
//   close    LOGOUT; with upstream.login_reuse, an idle connection after a clean session
//            is parked in the worker's ImapLoginPool instead, and the same user's next
//            open() with the same password starts at SELECT
class ImapMailStore final : public MailStore, ImapClient::Observer, FetchSink {
 public:
  // logins: where connections are kept for reuse; null, or a pool for another upstream
  // (an auth hook's route), keeps none.
  ImapMailStore(uv_loop_t* loop, const config::Upstream& settings, SSL_CTX* tls_context,
                metrics::Metrics& metrics, MailStore::Observer& observer,
                ImapLoginPool* logins = nullptr);

  void open(OpenRequest request, Opened done) override;
  void fetch(std::uint32_t uid, std::uint64_t listed_size, FetchPart part, MessageSink& sink,
             Done done) override;
  bool fetches_in_batches() const override { return true; }
  void fetch_batch(std::vector<BatchItem> items, BatchSink& sink, Done done) override;
  void keep_alive(Done done) override;
  void commit(std::vector<std::uint32_t> deleted, Done done) override;
  void save_uidl_map(std::string text, Done done) override;
  void pause_reading() override {
    if (client_) {
      client_->pause_reading();
    }
  }
  void resume_reading() override {
    if (client_) {
      client_->resume_reading();
    }
  }
  void close(bool graceful) override;
  bool usable() const override { return client_ && client_->usable(); }
  std::optional<bool> accepts(UpstreamCredentials::Mechanism mechanism) const override;
  // A reused connection counts from where this session took it.
  std::uint64_t bytes_received() const override {
    return client_ ? client_->bytes_received() - received_before_ : 0;
  }
  std::uint64_t bytes_sent() const override {
    return client_ ? client_->bytes_sent() - sent_before_ : 0;
  }
  std::string tls_summary() const override { return client_ ? client_->tls_summary() : "none"; }

 private:
  // Marks the deletions of a commit in progress; see restore_marked().
  static constexpr std::string_view kPendingKeyword = "$PopbridgePending";
  enum class Reading { kNone, kSnapshot, kBody, kMetadata, kBatch };

  ImapClient::Observer& upstream_observer() { return *this; }
  // ImapClient::Observer
  void on_upstream_lost(const ImapResult& why) override;
  void on_expunged(std::uint32_t sequence) override;
  // FetchSink
  void on_fetch_begin(std::uint32_t sequence) override;
  void on_fetch_uid(std::uint32_t uid) override;
  void on_fetch_size(std::uint64_t size) override;
  void on_fetch_flags(std::string_view flags) override;
  void on_fetch_guid(std::string_view guid) override;
  void on_body_begin(std::string_view section, std::uint64_t origin, std::uint64_t size) override;
  void on_body_data(std::string_view chunk) override;
  void on_body_end() override;
  void on_fetch_end() override;
  void on_metadata(std::string_view entry, std::optional<std::string_view> value) override;

  void connect_and_log_in();
  // A connection parked by this user's last session, with the same password; false if none.
  bool reuse_login();
  // Whether a failed open is taken over by a fresh login (see the definition).
  bool fall_back_from_reuse(const StoreResult& result);
  void logged_in(const ImapResult& result);
  void select_mailbox();
  void mailbox_selected(const ImapResult& selected, const std::string& mailbox,
                        bool snapshot_requested);
  void read_snapshot();
  // upstream.uidl_map.store: metadata: GETMETADATA after the snapshot, then on.
  void read_uidl_map();
  void snapshot_read();
  const std::string& mailbox_name() const;
  void restore_marked();
  void opened(const StoreResult& result);
  // RETR and TOP (imap_mail_store_fetch.cc).
  void send_fetch();
  void fetch_top_text();
  void check_size_mismatch();
  void fetch_done(const ImapResult& result);
  // fetch_batch's share of the FetchSink events (imap_mail_store_batch.cc).
  void batch_fetch_begin(std::uint32_t sequence);
  void batch_body_begin(std::string_view section, std::uint64_t size);
  void batch_message_end();
  std::string deletion_flags() const;
  void commit_move(bool may_create);
  void commit_copy(std::size_t offset, bool may_create);
  void create_folder(std::function<void()> retry);
  void commit_hide(std::size_t offset);
  void commit_store(std::size_t offset);
  void commit_expunge(std::size_t offset);
  void commit_rollback(std::string detail);
  void committed(const StoreResult& result);
  // The store's vocabulary for an IMAP answer that is not OK.
  StoreResult failure(const ImapResult& result, StoreStatus refusal);

  uv_loop_t* loop_;
  SSL_CTX* tls_context_;
  const config::Upstream& settings_;
  metrics::Metrics& metrics_;
  MailStore::Observer& observer_;
  // Null only once close() has parked it.
  std::unique_ptr<ImapClient> client_;
  bool closed_ = false;
  ImapLoginPool* logins_;
  std::optional<LoginKey> login_key_;  // with logins_: whom the connection is logged in for
  bool open_ok_ = false;               // the snapshot was handed over
  bool reused_ = false;                // client_ came from logins_ and has not failed yet
  std::unique_ptr<Timer> fallback_;    // starts the fresh login after a reused one broke
  std::uint64_t received_before_ = 0;  // a reused connection's counters when taken
  std::uint64_t sent_before_ = 0;

  // open
  OpenRequest request_;
  bool reached_ = false;  // connected: the pre-login capabilities below are known
  bool offers_xoauth2_ = false;
  bool offers_oauthbearer_ = false;
  Opened opened_;
  std::uint64_t started_ns_ = 0;
  StoreSnapshot snapshot_;
  std::vector<std::uint32_t> marked_;  // left by an interrupted commit: to restore
  bool mark_pending_ = false;          // the mailbox keeps our pending-deletion keyword
  // UIDs by message sequence number, kept current through EXPUNGE responses, so a fetch
  // can tell a message another client removed from one that is still there.
  std::vector<std::uint32_t> sequence_;
  StoreMessage fetching_;
  bool fetching_has_size_ = false;
  bool fetching_marked_ = false;
  bool fetching_hidden_ = false;  // carries on_delete.keyword (action hide)
  std::string fetching_guid_;
  std::string fetching_header_;  // HEADER.FIELDS (X-UIDL), for upstream.reuse_xuidl

  // fetch
  Reading reading_ = Reading::kNone;
  MessageSink* sink_ = nullptr;
  Done fetch_done_;
  FetchPart part_ = FetchPart::kWhole;
  std::uint32_t uid_ = 0;
  std::uint64_t listed_size_ = 0;
  bool size_differs_ = false;   // the literal's size is not the listed one: held back
  bool any_size_ = false;       // the size difference is known to be real: serve it
  bool begun_ = false;          // on_message_begin was called
  bool literal_whole_ = false;  // the last literal arrived in full
  bool enough_ = false;         // the sink said it has what it needs
  std::uint64_t top_offset_ = 0;
  std::uint64_t last_literal_ = 0;
  bool top_text_ = false;  // fetching BODY[TEXT] partials

  // fetch_batch
  BatchSink* batch_sink_ = nullptr;
  std::vector<BatchItem> batch_items_;
  std::uint32_t batch_uid_ = 0;     // of the FETCH response being read (by sequence)
  bool batch_uid_differs_ = false;  // its UID item named another message
  bool batch_begun_ = false;        // on_batch_message_begin was called for it
  bool batch_size_listed_ = false;  // its literal is as long as the snapshot said
  bool batch_literal_whole_ = false;

  // commit
  std::vector<std::uint32_t> deleted_;
  Done commit_done_;
};

}  // namespace popbridge::proxy
