// SPDX-License-Identifier: Apache-2.0
// upstream.login_reuse on the store's side: open() starting from a connection this user's
// last session left logged in, and the fresh login that replaces one that broke.
#include <memory>

#include "proxy/base/deferred_delete.h"
#include "proxy/base/log.h"
#include "proxy/mailstore/imap/imap_mail_store.h"

namespace popbridge::proxy {

bool ImapMailStore::reuse_login() {
  std::unique_ptr<ImapClient> parked = logins_->take(*login_key_);
  if (!parked) {
    return false;
  }
  // This store's own client never connected, and nothing of it is in a callback.
  client_ = std::move(parked);
  client_->set_observer(upstream_observer());
  client_->forget_mailbox();
  received_before_ = client_->bytes_received();
  sent_before_ = client_->bytes_sent();
  reused_ = true;
  // reached_ stays false: the login mechanisms were offered to another session, and
  // accepts() must not report them as refused (UpstreamFacts would withdraw XOAUTH2).
  log::debug("upstream_login_reused", {{"session", request_.session_id}});
  select_mailbox();
  return true;
}

// The parked connection broke before the snapshot came (the server closed it as it was
// taken): this session connects and logs in itself, as if nothing had been parked. The
// old connection fails every command it had at once, so its other completions are
// ignored until the next loop turn, when the new one starts.
bool ImapMailStore::fall_back_from_reuse(const StoreResult& result) {
  if (fallback_) {
    return true;  // the rest of the old connection's completions
  }
  if (!reused_ || result.status != StoreStatus::kLost) {
    return false;
  }
  reused_ = false;
  log::info("reused_upstream_lost", {{"session", request_.session_id}, {"reason", result.detail}});
  DeferredDelete::of(loop_).retire(std::shared_ptr<ImapClient>(std::move(client_)));
  client_ = std::make_unique<ImapClient>(loop_, settings_, tls_context_, upstream_observer());
  received_before_ = sent_before_ = 0;
  fallback_ = std::make_unique<Timer>(loop_);
  fallback_->start(0, [this] {
    DeferredDelete::of(loop_).retire(std::shared_ptr<Timer>(std::move(fallback_)));
    if (!closed_) {
      connect_and_log_in();
    }
  });
  return true;
}

}  // namespace popbridge::proxy
