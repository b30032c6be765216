// SPDX-License-Identifier: Apache-2.0
// RETR and TOP on IMAP: one message's UID FETCH, streamed to the session's sink as it
// arrives; a body whose size is not the listed one, and TOP's partial fetches of the text.
#include <algorithm>
#include <string>

#include "protocol/imap/imap_writer.h"
#include "proxy/base/log.h"
#include "proxy/mailstore/imap/imap_mail_store.h"

namespace popbridge::proxy {
namespace {

// TOP reads the body in partial fetches of this size until it has its lines.
constexpr std::uint64_t kTopChunk = 64 * 1024;

}  // namespace

void ImapMailStore::fetch(std::uint32_t uid, std::uint64_t listed_size, FetchPart part,
                          MessageSink& sink, Done done) {
  sink_ = &sink;
  fetch_done_ = std::move(done);
  part_ = part;
  uid_ = uid;
  listed_size_ = listed_size;
  any_size_ = false;
  send_fetch();
}

void ImapMailStore::send_fetch() {
  begun_ = false;
  enough_ = false;
  literal_whole_ = false;
  top_text_ = false;
  size_differs_ = false;
  reading_ = Reading::kBody;
  protocol::ImapCommand fetch("UID FETCH");
  fetch.raw(std::to_string(uid_));
  if (part_ == FetchPart::kWhole) {
    fetch.raw(settings_.mark_seen ? "(BODY[])" : "(BODY.PEEK[])");
  } else {
    fetch.raw("(BODY.PEEK[HEADER])");
  }
  client_->run(fetch, this, [this](const ImapResult& result) {
    if (size_differs_ && result.ok()) {
      check_size_mismatch();
      return;
    }
    if (part_ == FetchPart::kTop && result.ok() && begun_ && literal_whole_ && !enough_) {
      top_text_ = true;
      top_offset_ = 0;
      fetch_top_text();
      return;
    }
    fetch_done(result);
  });
}

void ImapMailStore::check_size_mismatch() {
  // The body's size is not the one listed. Courier, for one, serves a short placeholder
  // text for a message another session expunged; a NOOP brings that expunge in. A message
  // that is still there after it really has another size (a server whose RFC822.SIZE is
  // approximate): fetch it again and serve it as it is.
  reading_ = Reading::kNone;
  client_->run(protocol::ImapCommand("NOOP"), nullptr, [this](const ImapResult& result) {
    if (!result.ok()) {
      fetch_done(result);
      return;
    }
    if (std::find(sequence_.begin(), sequence_.end(), uid_) == sequence_.end()) {
      log::warn("message_vanished",
                {{"session", request_.session_id}, {"uid", uid_}, {"listed", listed_size_}});
      begun_ = false;
      fetch_done(result);  // OK without a body: kMissing
      return;
    }
    any_size_ = true;
    send_fetch();
  });
}

void ImapMailStore::fetch_top_text() {
  literal_whole_ = false;
  last_literal_ = 0;
  protocol::ImapCommand fetch("UID FETCH");
  fetch.raw(std::to_string(uid_))
      .raw("(BODY.PEEK[TEXT]<" + std::to_string(top_offset_) + "." + std::to_string(kTopChunk) +
           ">)");
  client_->run(fetch, this, [this](const ImapResult& result) {
    const bool more = result.ok() && literal_whole_ && !enough_ && last_literal_ == kTopChunk;
    if (!more) {
      fetch_done(result);
      return;
    }
    top_offset_ += last_literal_;
    fetch_top_text();
  });
}

void ImapMailStore::fetch_done(const ImapResult& result) {
  reading_ = Reading::kNone;
  sink_ = nullptr;
  Done done = std::move(fetch_done_);
  fetch_done_ = nullptr;
  StoreResult outcome;
  if (result.ok() && begun_ && (literal_whole_ || top_text_)) {
    // The whole body is here and the server said OK (for TOP: a short or empty partial
    // means the body ended).
    outcome = {StoreStatus::kOk, {}};
  } else if (result.ok() && !begun_) {
    // OK without the body: another client expunged the message since our snapshot.
    outcome = {StoreStatus::kMissing, "message was removed from the mailbox"};
  } else if (result.ok()) {
    outcome = {StoreStatus::kTemporary, "the message ended early"};
  } else {
    outcome = failure(result, StoreStatus::kTemporary);
  }
  if (done) {
    done(outcome);
  }
}

}  // namespace popbridge::proxy
