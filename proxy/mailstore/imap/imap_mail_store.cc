// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/imap/imap_mail_store.h"

#include <algorithm>

#include "protocol/common/ascii.h"
#include "protocol/common/header_field.h"
#include "protocol/imap/imap_writer.h"
#include "proxy/base/log.h"

namespace popbridge::proxy {
namespace {

// The most of a snapshot's HEADER.FIELDS (X-UIDL) literal kept per message.
constexpr std::size_t kHeaderFieldsLimit = 4096;

metrics::UpstreamError error_kind(ImapResult::Failure failure) {
  switch (failure) {
    case ImapResult::Failure::kConnect:
      return metrics::UpstreamError::kConnect;
    case ImapResult::Failure::kTls:
      return metrics::UpstreamError::kTls;
    case ImapResult::Failure::kTimeout:
      return metrics::UpstreamError::kTimeout;
    case ImapResult::Failure::kBye:
      return metrics::UpstreamError::kBye;
    case ImapResult::Failure::kRefused:
      return metrics::UpstreamError::kRefused;
    case ImapResult::Failure::kClosed:
      return metrics::UpstreamError::kClosed;
    case ImapResult::Failure::kProtocol:
    case ImapResult::Failure::kNone:
      break;
  }
  return metrics::UpstreamError::kProtocol;
}

double seconds_since(std::uint64_t start_ns) {
  return static_cast<double>(uv_hrtime() - start_ns) / 1e9;
}

}  // namespace

ImapMailStore::ImapMailStore(uv_loop_t* loop, const config::Upstream& settings,
                             SSL_CTX* tls_context, metrics::Metrics& metrics,
                             MailStore::Observer& observer, ImapLoginPool* logins)
    : loop_(loop),
      tls_context_(tls_context),
      settings_(settings),
      metrics_(metrics),
      observer_(observer),
      client_(std::make_unique<ImapClient>(loop, settings, tls_context, upstream_observer())),
      logins_(logins != nullptr && &logins->settings() == &settings ? logins : nullptr) {}

StoreResult ImapMailStore::failure(const ImapResult& result, StoreStatus refusal) {
  if (result.kind == ImapResult::Kind::kFailed) {
    // Counted here, once per failure, wherever it happened (login, RETR, QUIT, timeout).
    metrics_.upstream_error(error_kind(result.failure)).Increment();
    return {StoreStatus::kLost, result.text};
  }
  return {refusal, result.text.empty() ? std::string("refused") : result.text};
}

std::optional<bool> ImapMailStore::accepts(UpstreamCredentials::Mechanism mechanism) const {
  if (!reached_) {
    return std::nullopt;
  }
  switch (mechanism) {
    case UpstreamCredentials::Mechanism::kXoauth2:
      return offers_xoauth2_;
    case UpstreamCredentials::Mechanism::kOauthbearer:
      return offers_oauthbearer_;
    case UpstreamCredentials::Mechanism::kPassword:
      break;
  }
  return true;
}

void ImapMailStore::close(bool graceful) {
  closed_ = true;
  opened_ = nullptr;
  fetch_done_ = nullptr;
  commit_done_ = nullptr;
  sink_ = nullptr;
  reading_ = Reading::kNone;
  if (!client_) {
    return;  // parked by an earlier close()
  }
  if (graceful && logins_ != nullptr && login_key_ && open_ok_ && client_->idle()) {
    logins_->park(*login_key_, std::move(client_));
  } else if (graceful) {
    client_->logout();
  } else {
    client_->shutdown();
  }
}

void ImapMailStore::on_expunged(std::uint32_t sequence) {
  if (sequence >= 1 && sequence <= sequence_.size()) {
    sequence_.erase(sequence_.begin() + static_cast<std::ptrdiff_t>(sequence - 1));
  }
}

void ImapMailStore::on_upstream_lost(const ImapResult& why) {
  const StoreResult result = failure(why, StoreStatus::kLost);
  if (!closed_) {
    observer_.on_store_lost(result);
  }
}

// --- open ---------------------------------------------------------------------------------

void ImapMailStore::open(OpenRequest request, Opened done) {
  request_ = std::move(request);
  opened_ = std::move(done);
  started_ns_ = uv_hrtime();
  if (logins_ != nullptr) {
    login_key_ = logins_->key_for(request_.credentials);
    if (login_key_ && reuse_login()) {
      return;
    }
  }
  connect_and_log_in();
}

void ImapMailStore::connect_and_log_in() {
  client_->set_client_identity(request_.client_address, request_.client_port,
                               "popbridge-" + request_.session_id);
  client_->connect([this](const ImapResult& connected) {
    if (!connected.ok()) {
      metrics_.upstream_connect_error.Increment();
      opened(failure(connected, StoreStatus::kTemporary));
      return;
    }
    // Login mechanisms are announced before login only; keep what was offered.
    reached_ = true;
    offers_xoauth2_ = client_->has_capability("AUTH=XOAUTH2");
    offers_oauthbearer_ = client_->has_capability("AUTH=OAUTHBEARER");
    client_->login(request_.credentials, [this](const ImapResult& result) { logged_in(result); });
  });
}

void ImapMailStore::logged_in(const ImapResult& result) {
  request_.credentials = {};  // wiped: not needed any more
  if (result.ok()) {
    metrics_.upstream_connect_ok.Increment();
    metrics_.upstream_connect_duration.Observe(seconds_since(started_ns_));
    select_mailbox();
    return;
  }
  if (result.kind == ImapResult::Kind::kFailed) {
    metrics_.upstream_connect_error.Increment();
    opened(failure(result, StoreStatus::kLost));
    return;
  }
  const std::string code = result.code_atom();
  if (code == "CANNOT") {
    log::warn("upstream_login_impossible",
              {{"session", request_.session_id}, {"reason", result.text}});
    opened({StoreStatus::kPermanent, result.text});
  } else if (code == "INUSE") {
    opened({StoreStatus::kInUse, result.text});
  } else if (code == "UNAVAILABLE" || code == "SERVERBUG" || code == "LIMIT") {
    opened({StoreStatus::kTemporary, result.text});
  } else {
    // A tagged NO without a code (Cyrus, Courier) is a credentials failure too.
    opened({StoreStatus::kRejected, result.text});
  }
}

void ImapMailStore::select_mailbox() {
  const std::string& mailbox = mailbox_name();
  protocol::ImapCommand select("SELECT");
  select.astring(mailbox);
  // The snapshot FETCH is read the same whatever SELECT answers (a failed SELECT makes it
  // fail too, and it is then ignored), so with pipelining it leaves with SELECT, and both
  // behind a CAPABILITY still in flight, unless its items depend on the answer.
  const bool with_snapshot =
      settings_.pipelining && !(request_.want_guids && client_->capabilities_pending());
  client_->pipeline(select, nullptr, [this, mailbox, with_snapshot](const ImapResult& selected) {
    mailbox_selected(selected, mailbox, with_snapshot);
  });
  if (with_snapshot) {
    read_snapshot();
  }
}

void ImapMailStore::mailbox_selected(const ImapResult& selected, const std::string& mailbox,
                                     bool snapshot_requested) {
  if (!selected.ok() || !client_->uidvalidity()) {
    // A NO that does not say "try later" means the mailbox is not there (Dovecot says
    // [NONEXISTENT]; Cyrus and Courier give no code): retrying will not make it appear,
    // and the likely cause is upstream.mailbox (or a hook's X-Popbridge-Mailbox).
    const std::string code = selected.code_atom();
    const bool transient =
        !selected.ok() && (selected.kind == ImapResult::Kind::kFailed || code == "UNAVAILABLE" ||
                           code == "SERVERBUG" || code == "LIMIT" || code == "INUSE");
    // A kept connection that broke is replaced (fall_back_from_reuse), not an error.
    if (!reused_ || selected.kind != ImapResult::Kind::kFailed) {
      log::error(transient ? "select_failed" : "mailbox_unavailable",
                 {{"session", request_.session_id},
                  {"mailbox", mailbox},
                  {"reason", selected.text},
                  {"hint", transient ? "" : "check upstream.mailbox"}});
    }
    opened(failure(selected, transient ? StoreStatus::kTemporary : StoreStatus::kPermanent));
    return;
  }
  snapshot_ = {};
  snapshot_.uidvalidity = *client_->uidvalidity();
  marked_.clear();
  // Where the mailbox keeps our keyword, commit() marks its deletions with it, and FLAGS
  // in the snapshot finds what an interrupted commit left behind.
  mark_pending_ = client_->may_store_keyword(kPendingKeyword);
  if (snapshot_requested) {
    return;  // the FETCH behind it completes the opening
  }
  if (client_->exists() == 0) {
    opened({StoreStatus::kOk, {}});
    return;
  }
  read_snapshot();
}

void ImapMailStore::read_snapshot() {
  std::string items = "(UID RFC822.SIZE";
  // A pipelined FETCH leaves before SELECT tells whether the mailbox keeps our keyword.
  if (settings_.pipelining || mark_pending_ ||
      settings_.on_delete.action == config::DeleteAction::kHide) {
    items += " FLAGS";
  }
  if (request_.want_guids) {
    items += client_->has_capability("OBJECTID") ? " EMAILID" : " X-GUID";
  }
  if (request_.want_xuidls) {
    items += " BODY.PEEK[HEADER.FIELDS (X-UIDL)]";
  }
  items += ")";
  reading_ = Reading::kSnapshot;
  sequence_.clear();
  protocol::ImapCommand fetch("UID FETCH");
  fetch.raw("1:*").raw(items);
  client_->pipeline(fetch, this, [this](const ImapResult& fetched) {
    reading_ = Reading::kNone;
    if (!opened_) {
      return;  // SELECT failed and said so
    }
    // An empty mailbox: some servers refuse "1:*" where there is nothing to fetch.
    const bool empty = sequence_.empty() && client_->exists() == 0;
    if (empty && fetched.kind != ImapResult::Kind::kFailed) {
      opened({StoreStatus::kOk, {}});
      return;
    }
    if (!fetched.ok()) {
      opened(failure(fetched, StoreStatus::kTemporary));
      return;
    }
    // Sequence numbers follow ascending UIDs (RFC 3501 §2.3.1.2); hidden messages have
    // theirs too. Servers answer in that order already: sorting thousands of sorted UIDs
    // every poll would cost more than the check.
    if (!std::is_sorted(sequence_.begin(), sequence_.end())) {
      std::sort(sequence_.begin(), sequence_.end());
    }
    sequence_.erase(std::unique(sequence_.begin(), sequence_.end()), sequence_.end());
    if (request_.want_uidl_map && request_.uidl_map_known_for != snapshot_.uidvalidity) {
      read_uidl_map();
      return;
    }
    snapshot_read();
  });
}

void ImapMailStore::snapshot_read() {
  if (!marked_.empty()) {
    restore_marked();
    return;
  }
  opened({StoreStatus::kOk, {}});
}

const std::string& ImapMailStore::mailbox_name() const {
  return request_.mailbox ? *request_.mailbox : settings_.mailbox;
}

void ImapMailStore::read_uidl_map() {
  snapshot_.uidl_map_read = true;
  if (!client_->has_capability("METADATA")) {
    snapshot_.uidl_map_problem = "the upstream does not offer METADATA (RFC 5464)";
    snapshot_read();
    return;
  }
  protocol::ImapCommand get("GETMETADATA");
  get.string(mailbox_name()).raw(config::UidlMapStore::kMetadataEntry);
  reading_ = Reading::kMetadata;
  client_->run(get, this, [this](const ImapResult& result) {
    reading_ = Reading::kNone;
    if (result.kind == ImapResult::Kind::kFailed) {
      opened(failure(result, StoreStatus::kLost));
      return;
    }
    if (!result.ok()) {
      // No map is a fresh UIDL for every message, never a wrong one.
      snapshot_.uidl_map.reset();
      snapshot_.uidl_map_problem = "GETMETADATA refused: " + result.text;
    }
    snapshot_read();
  });
}

void ImapMailStore::on_metadata(std::string_view entry, std::optional<std::string_view> value) {
  if (reading_ == Reading::kMetadata && entry == config::UidlMapStore::kMetadataEntry && value) {
    snapshot_.uidl_map = std::string(*value);
  }
}

void ImapMailStore::save_uidl_map(std::string text, Done done) {
  if (!client_->usable() || !client_->has_capability("METADATA")) {
    done({client_->usable() ? StoreStatus::kPermanent : StoreStatus::kLost,
          client_->usable() ? "the upstream does not offer METADATA (RFC 5464)" : "not connected"});
    return;
  }
  protocol::ImapCommand set("SETMETADATA");
  set.string(mailbox_name())
      .raw("(" + std::string(config::UidlMapStore::kMetadataEntry))
      .string(text)
      .attached(")");
  client_->run(set, nullptr, [this, done = std::move(done)](const ImapResult& result) {
    done(result.ok() ? StoreResult{StoreStatus::kOk, {}}
                     : failure(result, StoreStatus::kPermanent));
  });
}

void ImapMailStore::restore_marked() {
  // An earlier session's commit marked these and never confirmed their expunge (its
  // client or its connection went away in between): its client was not told they were
  // removed, so they stay. Left \Deleted, any other client's EXPUNGE would remove them.
  std::sort(marked_.begin(), marked_.end());
  protocol::ImapCommand unflag("UID STORE");
  unflag.raw(protocol::compress_uid_set({marked_.begin(), marked_.end()}))
      .raw("-FLAGS.SILENT (\\Deleted " + std::string(kPendingKeyword) + ")");
  client_->run(unflag, nullptr, [this](const ImapResult& result) {
    if (result.kind == ImapResult::Kind::kFailed) {
      opened(failure(result, StoreStatus::kLost));
      return;
    }
    if (result.ok()) {
      snapshot_.restored = marked_.size();
    } else {
      log::error("restore_failed", {{"session", request_.session_id}, {"reason", result.text}});
    }
    marked_.clear();
    opened({StoreStatus::kOk, {}});
  });
}

void ImapMailStore::opened(const StoreResult& result) {
  if (!opened_) {
    return;
  }
  if (!result.ok() && fall_back_from_reuse(result)) {
    return;
  }
  Opened done = std::move(opened_);
  opened_ = nullptr;
  request_.credentials = {};  // wiped: kept until now for a fall-back login
  open_ok_ = result.ok();
  StoreSnapshot snapshot = result.ok() ? std::move(snapshot_) : StoreSnapshot{};
  snapshot_ = {};
  done(result, std::move(snapshot));
}

void ImapMailStore::on_fetch_begin(std::uint32_t sequence) {
  if (reading_ == Reading::kBatch) {
    batch_fetch_begin(sequence);
    return;
  }
  fetching_ = {};
  fetching_has_size_ = false;
  fetching_marked_ = false;
  fetching_hidden_ = false;
  fetching_guid_.clear();
  fetching_header_.clear();
}

void ImapMailStore::on_fetch_uid(std::uint32_t uid) {
  if (reading_ == Reading::kBatch) {
    batch_uid_differs_ = batch_uid_differs_ || uid != batch_uid_;
    return;
  }
  fetching_.uid = uid;
}

void ImapMailStore::on_fetch_size(std::uint64_t size) {
  fetching_.size = size;
  fetching_has_size_ = true;
}

void ImapMailStore::on_fetch_guid(std::string_view guid) { fetching_guid_.assign(guid); }

void ImapMailStore::on_fetch_flags(std::string_view flags) {
  while (!flags.empty()) {
    const std::size_t end = flags.find(' ');
    const std::string_view flag = flags.substr(0, end);
    if (protocol::equals_ignoring_ascii_case(flag, kPendingKeyword)) {
      fetching_marked_ = true;
    } else if (settings_.on_delete.action == config::DeleteAction::kHide &&
               protocol::equals_ignoring_ascii_case(flag, settings_.on_delete.keyword)) {
      fetching_hidden_ = true;
    }
    if (end == std::string_view::npos) {
      break;
    }
    flags.remove_prefix(end + 1);
  }
}

void ImapMailStore::on_fetch_end() {
  if (reading_ == Reading::kBatch) {
    batch_message_end();
    return;
  }
  // Only answers to our FETCH carry both items; an unsolicited flag update (which may
  // carry a UID too) must not enter the snapshot as a message of size 0.
  if (reading_ == Reading::kSnapshot && fetching_.uid != 0 && fetching_has_size_) {
    sequence_.push_back(fetching_.uid);
    if (fetching_marked_) {
      marked_.push_back(fetching_.uid);
    }
    if (fetching_hidden_) {
      ++snapshot_.hidden;  // deleted earlier with on_delete: hide
      return;
    }
    snapshot_.messages.push_back(fetching_);
    if (request_.want_guids) {
      snapshot_.guids.push_back(fetching_guid_);
    }
    if (request_.want_xuidls) {
      snapshot_.xuidls.push_back(protocol::first_header_field(fetching_header_, "X-UIDL"));
    }
  }
}

// --- body events (RETR and TOP: imap_mail_store_fetch.cc) ---------------------------

void ImapMailStore::on_body_begin(std::string_view section, std::uint64_t, std::uint64_t size) {
  if (reading_ == Reading::kBatch) {
    batch_body_begin(section, size);
    return;
  }
  if (reading_ != Reading::kBody || sink_ == nullptr) {
    return;
  }
  literal_whole_ = false;
  last_literal_ = size;
  if (part_ == FetchPart::kWhole && !begun_ && !any_size_ && size != listed_size_) {
    size_differs_ = true;  // held back until check_size_mismatch() knows why
    return;
  }
  if (!begun_) {
    begun_ = true;
    sink_->on_message_begin(part_ == FetchPart::kWhole ? std::optional<std::uint64_t>(size)
                                                       : std::nullopt);
  }
}

void ImapMailStore::on_body_data(std::string_view chunk) {
  if (reading_ == Reading::kSnapshot) {
    // HEADER.FIELDS (X-UIDL): a few lines; a message that repeats the field endlessly
    // gets no more room than a UIDL needs (the first field is the one that counts).
    const std::size_t room =
        kHeaderFieldsLimit - std::min(kHeaderFieldsLimit, fetching_header_.size());
    fetching_header_.append(chunk.substr(0, room));
    return;
  }
  if (reading_ == Reading::kBatch) {
    if (batch_begun_) {
      batch_sink_->on_batch_message_data(chunk);
    }
    return;
  }
  if (reading_ != Reading::kBody || sink_ == nullptr || !begun_ || enough_ || size_differs_) {
    return;
  }
  if (!sink_->on_message_data(chunk)) {
    enough_ = true;
  }
}

void ImapMailStore::on_body_end() {
  if (reading_ == Reading::kBody) {
    literal_whole_ = true;
  } else if (reading_ == Reading::kBatch) {
    batch_literal_whole_ = batch_begun_;
  }
}

// --- keep-alive ---------------------------------------------------------------------------

void ImapMailStore::keep_alive(Done done) {
  client_->run(protocol::ImapCommand("NOOP"), nullptr,
               [this, done = std::move(done)](const ImapResult& result) {
                 done(result.kind == ImapResult::Kind::kFailed ? failure(result, StoreStatus::kLost)
                                                               : StoreResult{StoreStatus::kOk, {}});
               });
}

}  // namespace popbridge::proxy
