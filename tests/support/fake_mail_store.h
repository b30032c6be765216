// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "proxy/base/uv_handle.h"
#include "proxy/mailstore/mail_store.h"

namespace popbridge::testing {

// What a FakeMailStore serves and what it was asked to do. Shared between the test and
// the store, which the session owns and may retire before the test looks.
struct FakeMailbox {
  struct Message {
    std::uint32_t uid = 0;
    std::string body;                          // with CRLF line ends, as the store holds it
    std::optional<std::uint64_t> listed_size;  // the snapshot's size, when it lies
  };
  std::uint32_t uidvalidity = 1234;
  std::vector<Message> messages;
  std::string password = "secret";                           // open() refuses any other
  proxy::StoreStatus open_status = proxy::StoreStatus::kOk;  // once the password matched
  std::set<std::uint32_t> missing;                           // fetch() answers kMissing
  // fetch() of this UID breaks the connection after this many octets were delivered.
  std::optional<std::pair<std::uint32_t, std::size_t>> break_fetch;
  proxy::StoreStatus commit_status = proxy::StoreStatus::kOk;
  std::size_t chunk_size = 1000;  // octets per delivery; one delivery per loop turn
  bool batches = false;           // fetch_batch() works (as on IMAP), else refused
  // In a batch these arrive, but not as the store can vouch for (on IMAP: a UID item that
  // differs, a size other than listed): the octets are another message's, ended not whole.
  std::set<std::uint32_t> batch_unconfirmed;

  // What happened.
  std::vector<proxy::OpenRequest> opens;
  std::vector<std::vector<std::uint32_t>> commits;
  std::vector<std::uint32_t> fetches;
  std::vector<std::vector<std::uint32_t>> batch_fetches;
  std::size_t keep_alives = 0;
  std::size_t closes = 0;
  std::size_t pauses = 0;
  bool stopped_early = false;  // a sink said it had enough (TOP)

  const Message* find(std::uint32_t uid) const {
    auto found = std::find_if(messages.begin(), messages.end(),
                              [uid](const Message& m) { return m.uid == uid; });
    return found == messages.end() ? nullptr : &*found;
  }
};

// A MailStore that completes every operation on a later loop turn, as a real upstream
// does, and delivers messages in chunks that honour pause_reading().
class FakeMailStore final : public proxy::MailStore {
 public:
  FakeMailStore(uv_loop_t* loop, std::shared_ptr<FakeMailbox> mailbox)
      : mailbox_(std::move(mailbox)), timer_(loop) {}

  void open(proxy::OpenRequest request, Opened done) override {
    const bool accepted = request.credentials.secret.view() == mailbox_->password;
    mailbox_->opens.push_back(std::move(request));
    later([this, accepted, done = std::move(done)] {
      if (!accepted) {
        done({proxy::StoreStatus::kRejected, "bad password"}, {});
        return;
      }
      proxy::StoreSnapshot snapshot;
      snapshot.uidvalidity = mailbox_->uidvalidity;
      for (const FakeMailbox::Message& message : mailbox_->messages) {
        snapshot.messages.push_back(
            {message.uid, message.listed_size.value_or(message.body.size())});
      }
      open_ = mailbox_->open_status == proxy::StoreStatus::kOk;
      done({mailbox_->open_status, "fake"}, std::move(snapshot));
    });
  }

  void fetch(std::uint32_t uid, std::uint64_t, proxy::FetchPart part, proxy::MessageSink& sink,
             Done done) override {
    mailbox_->fetches.push_back(uid);
    later([this, uid, part, &sink, done = std::move(done)]() mutable {
      const FakeMailbox::Message* message = mailbox_->find(uid);
      if (message == nullptr || mailbox_->missing.count(uid) != 0) {
        done({proxy::StoreStatus::kMissing, "gone"});
        return;
      }
      sink.on_message_begin(part == proxy::FetchPart::kWhole
                                ? std::optional<std::uint64_t>(message->body.size())
                                : std::nullopt);
      transfer_ = Transfer{uid, 0, &sink, std::move(done)};
      deliver();
    });
  }

  bool fetches_in_batches() const override { return mailbox_->batches; }

  // Every message in one loop turn; a break_fetch inside the batch loses the connection
  // there, after the messages before it arrived whole.
  void fetch_batch(std::vector<proxy::BatchItem> items, proxy::BatchSink& sink,
                   Done done) override {
    std::vector<std::uint32_t> uids;
    for (const proxy::BatchItem& item : items) {
      uids.push_back(item.uid);
    }
    mailbox_->batch_fetches.push_back(uids);
    later([this, uids, &sink, done = std::move(done)] {
      for (std::uint32_t uid : uids) {
        const FakeMailbox::Message* message = mailbox_->find(uid);
        if (message == nullptr || mailbox_->missing.count(uid) != 0) {
          continue;
        }
        const auto& broken = mailbox_->break_fetch;
        sink.on_batch_message_begin(uid, message->body.size());
        if (broken && broken->first == uid) {
          sink.on_batch_message_data(std::string_view(message->body).substr(0, broken->second));
          sink.on_batch_message_end(false);
          open_ = false;
          done({proxy::StoreStatus::kLost, "connection reset"});
          return;
        }
        if (mailbox_->batch_unconfirmed.count(uid) != 0) {
          sink.on_batch_message_data("Subject: some other message\r\n\r\n");
          sink.on_batch_message_end(false);
          continue;
        }
        sink.on_batch_message_data(message->body);
        sink.on_batch_message_end(true);
      }
      done({proxy::StoreStatus::kOk, ""});
    });
  }

  void keep_alive(Done done) override {
    ++mailbox_->keep_alives;
    later([done = std::move(done)] { done({proxy::StoreStatus::kOk, ""}); });
  }

  void commit(std::vector<std::uint32_t> deleted, Done done) override {
    mailbox_->commits.push_back(std::move(deleted));
    later([this, done = std::move(done)] { done({mailbox_->commit_status, "fake"}); });
  }

  void pause_reading() override {
    ++mailbox_->pauses;
    paused_ = true;
  }
  void resume_reading() override {
    paused_ = false;
    if (transfer_) {
      later([this] { deliver(); });
    }
  }
  void close(bool) override {
    ++mailbox_->closes;
    closed_ = true;
    open_ = false;
    timer_.stop();
  }
  bool usable() const override { return open_ && !closed_; }
  std::optional<bool> accepts(proxy::UpstreamCredentials::Mechanism) const override {
    return std::nullopt;
  }
  std::uint64_t bytes_received() const override { return 0; }
  std::uint64_t bytes_sent() const override { return 0; }
  std::string tls_summary() const override { return {}; }

  // For Settings::make_store.
  static proxy::MailStoreFactory factory(std::shared_ptr<FakeMailbox> mailbox) {
    return [mailbox](uv_loop_t* loop, const config::Upstream&, SSL_CTX*, metrics::Metrics&,
                     proxy::MailStore::Observer&,
                     proxy::LoginPool*) -> std::shared_ptr<proxy::MailStore> {
      return std::make_shared<FakeMailStore>(loop, mailbox);
    };
  }

 private:
  struct Transfer {
    std::uint32_t uid;
    std::size_t offset;
    proxy::MessageSink* sink;
    Done done;
  };

  void later(std::function<void()> work) {
    timer_.start(0, [this, work = std::move(work)] {
      if (!closed_) {
        work();
      }
    });
  }

  // One chunk per turn, so the session sees data arriving over time.
  void deliver() {
    if (!transfer_ || paused_ || closed_) {
      return;
    }
    const std::string& body = mailbox_->find(transfer_->uid)->body;
    std::size_t end = std::min(body.size(), transfer_->offset + mailbox_->chunk_size);
    const auto& broken = mailbox_->break_fetch;
    const bool breaks = broken && broken->first == transfer_->uid;
    if (breaks) {
      end = std::min(end, broken->second);
    }
    const std::size_t begin = transfer_->offset;
    transfer_->offset = end;
    bool wants_more = true;
    if (end > begin) {
      wants_more =
          transfer_->sink->on_message_data(std::string_view(body).substr(begin, end - begin));
      if (closed_) {
        return;
      }
    }
    if (breaks && end == broken->second) {
      open_ = false;
      finish({proxy::StoreStatus::kLost, "connection reset"});
      return;
    }
    if (!wants_more) {
      mailbox_->stopped_early = true;
      finish({proxy::StoreStatus::kOk, ""});
      return;
    }
    if (end == body.size()) {
      finish({proxy::StoreStatus::kOk, ""});
      return;
    }
    later([this] { deliver(); });
  }

  void finish(const proxy::StoreResult& result) {
    Done done = std::move(transfer_->done);
    transfer_.reset();
    done(result);
  }

  std::shared_ptr<FakeMailbox> mailbox_;
  proxy::Timer timer_;
  std::optional<Transfer> transfer_;
  bool paused_ = false;
  bool closed_ = false;
  bool open_ = false;
};

}  // namespace popbridge::testing
