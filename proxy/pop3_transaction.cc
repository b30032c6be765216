// The TRANSACTION and UPDATE states: the snapshot, maildrop commands, RETR/TOP streaming
// and the expunge at QUIT.
#include <algorithm>
#include <cctype>

#include "protocol/imap_writer.h"
#include "proxy/log.h"
#include "proxy/pop3_session.h"

namespace popbridge::proxy {
namespace {

using protocol::Pop3Command;
using protocol::RespCode;

// TOP reads the body in partial fetches of this size until it has its lines.
constexpr std::uint64_t kTopChunk = 64 * 1024;
// UIDs per STORE/EXPUNGE command, to keep command lines short for every server.
constexpr std::size_t kUidsPerCommand = 500;

// Marks the deletions of an UPDATE in progress (see Pop3Session::roll_back_residue).
constexpr std::string_view kPendingKeyword = "$PopbridgePending";

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::vector<unsigned> slice(const std::vector<std::uint32_t>& uids, std::size_t offset) {
  const std::size_t end = std::min(uids.size(), offset + kUidsPerCommand);
  return {uids.begin() + static_cast<std::ptrdiff_t>(offset),
          uids.begin() + static_cast<std::ptrdiff_t>(end)};
}

}  // namespace

// --- snapshot ---------------------------------------------------------------------------

void Pop3Session::select_mailbox() {
  protocol::ImapCommand select("SELECT");
  select.astring(mailbox_override_ ? *mailbox_override_ : config().upstream.mailbox);
  upstream_->run(select, nullptr, [this](const ImapResult& selected) {
    if (!selected.ok() || !upstream_->uidvalidity()) {
      log::warn("select_failed", {{"session", id_text_},
                                  {"mailbox", config().upstream.mailbox},
                                  {"reason", selected.text}});
      // A mailbox that does not exist will not appear by retrying.
      const bool permanent = selected.code_atom() == "NONEXISTENT";
      login_failed(permanent ? RespCode::kSysPerm : RespCode::kSysTemp,
                   "Unable to open the maildrop.", metrics::AuthResult::kUpstreamUnavailable);
      return;
    }
    snapshot_.clear();
    snapshot_guids_.clear();
    residue_.clear();
    // Where the mailbox keeps our keyword, QUIT marks its deletions with it, and FLAGS in
    // the snapshot finds what an interrupted UPDATE left behind.
    mark_pending_ = upstream_->may_store_keyword(kPendingKeyword);
    if (upstream_->exists() == 0) {
      build_maildrop();
      return;
    }
    transfer_ = Transfer::kSnapshot;
    std::string items = "(UID RFC822.SIZE";
    if (mark_pending_) {
      items += " FLAGS";
    }
    if (config().upstream.uidl_format.needs_guid()) {
      items += upstream_->has_capability("OBJECTID") ? " EMAILID" : " X-GUID";
    }
    items += ")";
    protocol::ImapCommand fetch("UID FETCH");
    fetch.raw("1:*").raw(items);
    upstream_->run(fetch, this, [this](const ImapResult& fetched) {
      transfer_ = Transfer::kNone;
      if (!fetched.ok()) {
        login_failed(RespCode::kSysTemp, "Unable to read the maildrop.",
                     metrics::AuthResult::kUpstreamUnavailable);
        return;
      }
      if (!residue_.empty()) {
        roll_back_residue();
        return;
      }
      build_maildrop();
    });
  });
}

void Pop3Session::roll_back_residue() {
  // An earlier session's QUIT marked these and never confirmed their expunge (its client
  // or its upstream connection went away in between): its client was not told they
  // were removed, so they must stay. Left \Deleted, any other client's EXPUNGE would
  // remove them later.
  std::sort(residue_.begin(), residue_.end());
  protocol::ImapCommand unflag("UID STORE");
  unflag.raw(protocol::compress_uid_set({residue_.begin(), residue_.end()}))
      .raw("-FLAGS.SILENT (\\Deleted " + std::string(kPendingKeyword) + ")");
  upstream_->run(unflag, nullptr, [this](const ImapResult& result) {
    if (result.kind == ImapResult::Kind::kFailed) {
      login_failed(RespCode::kSysTemp, "Unable to read the maildrop.",
                   metrics::AuthResult::kUpstreamUnavailable);
      return;
    }
    if (result.ok()) {
      context_.metrics.deletions_rolled_back.Increment(static_cast<double>(residue_.size()));
      log::warn("deletions_rolled_back",
                {{"session", id_text_}, {"user", log::user(user_)}, {"messages", residue_.size()}});
    } else {
      log::error("rollback_failed", {{"session", id_text_}, {"reason", result.text}});
    }
    residue_.clear();
    build_maildrop();
  });
}

void Pop3Session::build_maildrop() {
  maildrop_ = Maildrop(std::move(snapshot_), std::move(snapshot_guids_), *upstream_->uidvalidity(),
                       config().upstream.uidl_format);
  snapshot_ = {};
  snapshot_guids_ = {};
  finish_login();
}

void Pop3Session::on_fetch_begin(std::uint32_t) {
  fetching_ = {};
  fetching_has_size_ = false;
  fetching_guid_.clear();
  fetching_pending_ = false;
}

void Pop3Session::on_fetch_uid(std::uint32_t uid) { fetching_.uid = uid; }

void Pop3Session::on_fetch_size(std::uint64_t size) {
  fetching_.size = size;
  fetching_has_size_ = true;
}

void Pop3Session::on_fetch_guid(std::string_view guid) { fetching_guid_.assign(guid); }

void Pop3Session::on_fetch_flags(std::string_view flags) {
  while (!flags.empty()) {
    const std::size_t end = flags.find(' ');
    if (equals_ignoring_case(flags.substr(0, end), kPendingKeyword)) {
      fetching_pending_ = true;
    }
    if (end == std::string_view::npos) {
      break;
    }
    flags.remove_prefix(end + 1);
  }
}

void Pop3Session::on_fetch_end() {
  // Only answers to our FETCH carry both items; an unsolicited flag update (which may
  // carry a UID too) must not enter the snapshot as a message of size 0.
  if (transfer_ == Transfer::kSnapshot && fetching_.uid != 0 && fetching_has_size_) {
    snapshot_.push_back(fetching_);
    if (config().upstream.uidl_format.needs_guid()) {
      snapshot_guids_.push_back(fetching_guid_);
    }
    if (fetching_pending_) {
      residue_.push_back(fetching_.uid);
    }
  }
}

// --- commands answered from the snapshot -------------------------------------------------

void Pop3Session::cmd_stat(Pop3Command&) {
  reply(protocol::ok_reply(std::to_string(maildrop_.visible_count()) + " " +
                           std::to_string(maildrop_.visible_octets())));
}

void Pop3Session::cmd_list(Pop3Command& command) {
  if (command.message) {
    const Maildrop::Message* message = maildrop_.find(*command.message);
    if (message == nullptr) {
      reply(protocol::err_reply(RespCode::kNone, "no such message"));
      return;
    }
    reply(
        protocol::ok_reply(std::to_string(*command.message) + " " + std::to_string(message->size)));
    return;
  }
  out_.clear();
  out_ += protocol::ok_reply(std::to_string(maildrop_.visible_count()) + " messages (" +
                             std::to_string(maildrop_.visible_octets()) + " octets)");
  std::uint32_t number = 0;
  for (const Maildrop::Message& message : maildrop_.messages()) {
    ++number;
    if (!message.deleted) {
      out_ += std::to_string(number);
      out_ += ' ';
      out_ += std::to_string(message.size);
      out_ += "\r\n";
    }
  }
  out_ += ".\r\n";
  reply(out_);
}

void Pop3Session::cmd_uidl(Pop3Command& command) {
  if (command.message) {
    const Maildrop::Message* message = maildrop_.find(*command.message);
    if (message == nullptr) {
      reply(protocol::err_reply(RespCode::kNone, "no such message"));
      return;
    }
    reply(protocol::ok_reply(std::to_string(*command.message) + " " + maildrop_.uidl(*message)));
    return;
  }
  out_.clear();
  out_ += protocol::ok_reply("unique-id listing follows");
  std::uint32_t number = 0;
  for (const Maildrop::Message& message : maildrop_.messages()) {
    ++number;
    if (!message.deleted) {
      out_ += std::to_string(number);
      out_ += ' ';
      out_ += maildrop_.uidl(message);
      out_ += "\r\n";
    }
  }
  out_ += ".\r\n";
  reply(out_);
}

void Pop3Session::cmd_dele(Pop3Command& command) {
  if (!maildrop_.mark_deleted(*command.message)) {
    reply(protocol::err_reply(RespCode::kNone, "no such message"));
    return;
  }
  reply(protocol::ok_reply("message " + std::to_string(*command.message) + " deleted"));
}

void Pop3Session::cmd_rset(Pop3Command&) {
  maildrop_.reset();
  reply(protocol::ok_reply("maildrop has " + std::to_string(maildrop_.visible_count()) +
                           " messages (" + std::to_string(maildrop_.visible_octets()) +
                           " octets)"));
}

// --- commands that need the upstream -----------------------------------------------------

bool Pop3Session::require_upstream() {
  if (upstream_ && upstream_->usable()) {
    return true;
  }
  upstream_gone_reply();
  return false;
}

void Pop3Session::upstream_gone_reply() {
  reply(protocol::err_reply(RespCode::kSysTemp, "connection to the mail store lost"));
  close_gracefully(metrics::SessionEnd::kUpstreamFailed);
}

void Pop3Session::cmd_noop(Pop3Command&) {
  if (!require_upstream()) {
    return;
  }
  busy_ = true;
  // Forwarded so the upstream connection lives as long as the POP3 session.
  upstream_->run(protocol::ImapCommand("NOOP"), nullptr, [this](const ImapResult& result) {
    if (result.kind == ImapResult::Kind::kFailed) {
      upstream_gone_reply();
      return;
    }
    reply(protocol::ok_reply({}));
    command_done();
  });
}

const Maildrop::Message* Pop3Session::begin_transfer(const Pop3Command& command, Transfer kind) {
  const Maildrop::Message* message = maildrop_.find(*command.message);
  if (message == nullptr) {
    reply(protocol::err_reply(RespCode::kNone, "no such message"));
    return nullptr;
  }
  if (!require_upstream()) {
    return nullptr;
  }
  busy_ = true;
  transfer_ = kind;
  transfer_uid_ = message->uid;
  transfer_listed_size_ = message->size;
  transfer_started_ = false;
  body_complete_ = false;
  stuffer_ = {};
  return message;
}

void Pop3Session::cmd_retr(Pop3Command& command) {
  const Maildrop::Message* message = begin_transfer(command, Transfer::kRetrieve);
  if (message == nullptr) {
    return;
  }
  protocol::ImapCommand fetch("UID FETCH");
  fetch.raw(std::to_string(message->uid))
      .raw(config().upstream.mark_seen ? "(BODY[])" : "(BODY.PEEK[])");
  upstream_->run(fetch, this, [this](const ImapResult& result) { finish_transfer(result); });
}

void Pop3Session::cmd_top(Pop3Command& command) {
  const Maildrop::Message* message = begin_transfer(command, Transfer::kTopHeader);
  if (message == nullptr) {
    return;
  }
  top_filter_.emplace(command.lines);
  protocol::ImapCommand fetch("UID FETCH");
  fetch.raw(std::to_string(message->uid)).raw("(BODY.PEEK[HEADER])");
  upstream_->run(fetch, this, [this](const ImapResult& result) {
    if (!result.ok() || !body_complete_ || top_filter_->done()) {
      finish_transfer(result);
      return;
    }
    transfer_ = Transfer::kTopText;
    transfer_offset_ = 0;
    fetch_top_text();
  });
}

void Pop3Session::fetch_top_text() {
  body_complete_ = false;
  transfer_last_literal_ = 0;
  protocol::ImapCommand fetch("UID FETCH");
  fetch.raw(std::to_string(transfer_uid_))
      .raw("(BODY.PEEK[TEXT]<" + std::to_string(transfer_offset_) + "." +
           std::to_string(kTopChunk) + ">)");
  upstream_->run(fetch, this, [this](const ImapResult& result) {
    const bool more = result.ok() && body_complete_ && !top_filter_->done() &&
                      transfer_last_literal_ == kTopChunk;
    if (!more) {
      // A short partial means the body ended; a body of fewer lines is sent whole.
      body_complete_ = body_complete_ || (result.ok() && transfer_started_);
      finish_transfer(result);
      return;
    }
    transfer_offset_ += transfer_last_literal_;
    fetch_top_text();
  });
}

void Pop3Session::on_body_begin(std::string_view, std::uint64_t, std::uint64_t size) {
  switch (transfer_) {
    case Transfer::kRetrieve:
      if (transfer_started_) {
        return;
      }
      transfer_started_ = true;
      reply(protocol::ok_reply(std::to_string(size) + " octets"));
      break;
    case Transfer::kTopHeader:
      if (transfer_started_) {
        return;
      }
      transfer_started_ = true;
      reply(protocol::ok_reply("top of message follows"));
      break;
    case Transfer::kTopText:
      transfer_last_literal_ = size;
      break;
    default:
      break;
  }
}

void Pop3Session::on_body_data(std::string_view chunk) {
  if (!transfer_started_ || state_ == State::kClosing) {
    return;
  }
  if (transfer_ == Transfer::kRetrieve) {
    emit_body(chunk);
  } else if (transfer_ == Transfer::kTopHeader || transfer_ == Transfer::kTopText) {
    emit_body(top_filter_->take(chunk));
  }
}

void Pop3Session::on_body_end() {
  if (transfer_ != Transfer::kNone && transfer_ != Transfer::kSnapshot) {
    body_complete_ = true;
  }
}

void Pop3Session::emit_body(std::string_view data) {
  if (data.empty()) {
    return;
  }
  out_.clear();
  stuffer_.feed(data, out_);
  client_->write(out_);
  apply_backpressure();
}

void Pop3Session::apply_backpressure() {
  if (upstream_ && client_->above_high_watermark()) {
    upstream_->pause_reading();
  }
}

void Pop3Session::on_drained() {
  if (upstream_) {
    upstream_->resume_reading();
  }
  process_input();
}

void Pop3Session::finish_transfer(const ImapResult& result) {
  const Transfer kind = transfer_;
  transfer_ = Transfer::kNone;
  if (result.ok() && transfer_started_ && body_complete_) {
    // The whole body is here and the upstream said OK: only now may the client see the
    // terminator (data-integrity rule 1).
    out_.clear();
    stuffer_.finish(out_);
    client_->write(out_);
    if (kind == Transfer::kRetrieve) {
      context_.metrics.messages_retrieved.Increment();
      if (stuffer_.octets() != transfer_listed_size_) {
        context_.metrics.retrieve_size_mismatches.Increment();
        log::warn("size_mismatch", {{"session", id_text_},
                                    {"uid", transfer_uid_},
                                    {"listed", transfer_listed_size_},
                                    {"sent", stuffer_.octets()}});
      }
    }
    top_filter_.reset();
    command_done();
    return;
  }
  top_filter_.reset();
  if (transfer_started_) {
    fail_transfer(result.text.empty() ? "upstream failed during transfer" : result.text);
    return;
  }
  if (result.kind == ImapResult::Kind::kFailed) {
    upstream_gone_reply();
    return;
  }
  if (result.ok()) {
    // OK without the body: another client expunged the message since our snapshot.
    reply(protocol::err_reply(RespCode::kNone, "message was removed from the mailbox"));
  } else {
    reply(protocol::err_reply(RespCode::kSysTemp, "unable to read the message"));
  }
  command_done();
}

void Pop3Session::fail_transfer(std::string_view why) {
  // Part of the message is already with the client: without the terminator the client
  // knows it is incomplete; with one it would store a truncated message as complete.
  log::error("transfer_failed", {{"session", id_text_}, {"uid", transfer_uid_}, {"reason", why}});
  abort(metrics::SessionEnd::kUpstreamFailed);
}

// --- QUIT and UPDATE ---------------------------------------------------------------------

void Pop3Session::cmd_quit(Pop3Command&) {
  if (state_ == State::kAuthorization) {
    reply(protocol::ok_reply("popbridge signing off"));
    close_gracefully(metrics::SessionEnd::kQuit);
    return;
  }
  state_ = State::kUpdate;
  std::vector<std::uint32_t> uids = maildrop_.deleted_uids();
  if (uids.empty()) {
    reply(protocol::ok_reply("popbridge signing off"));
    close_gracefully(metrics::SessionEnd::kQuit);
    return;
  }
  if (!upstream_ || !upstream_->usable()) {
    update_done(false, "connection to the mail store lost");
    return;
  }
  if (!upstream_->has_capability("UIDPLUS") && !config().upstream.expunge_without_uidplus) {
    // A bare EXPUNGE would also remove messages other clients marked \Deleted.
    update_done(false, "the mail store lacks UIDPLUS", RespCode::kSysPerm);
    return;
  }
  busy_ = true;
  update_uids_ = std::move(uids);
  update_store(0);
}

std::string Pop3Session::deletion_flags() const {
  // The keyword tells a later session that these \Deleted flags belong to an UPDATE that
  // may not have finished (see roll_back_residue).
  return mark_pending_ ? "(\\Deleted " + std::string(kPendingKeyword) + ")" : "(\\Deleted)";
}

// STORE, and only once every STORE succeeded, EXPUNGE: a refused STORE expunges nothing.
// Each step is sent the moment the previous one is confirmed; if the connection is cut
// in between, the keyword lets the user's next session restore the flagged messages.
void Pop3Session::update_store(std::size_t offset) {
  if (offset >= update_uids_.size()) {
    update_expunge(0);
    return;
  }
  protocol::ImapCommand store("UID STORE");
  store.raw(protocol::compress_uid_set(slice(update_uids_, offset)))
      .raw("+FLAGS.SILENT " + deletion_flags());
  upstream_->run(store, nullptr, [this, offset](const ImapResult& result) {
    if (!result.ok()) {
      update_rollback(result.text);
      return;
    }
    update_store(offset + kUidsPerCommand);
  });
}

void Pop3Session::update_expunge(std::size_t offset) {
  if (offset >= update_uids_.size()) {
    update_expunged();
    return;
  }
  const bool uidplus = upstream_->has_capability("UIDPLUS");
  protocol::ImapCommand expunge(uidplus ? "UID EXPUNGE" : "EXPUNGE");
  if (uidplus) {
    expunge.raw(protocol::compress_uid_set(slice(update_uids_, offset)));
  }
  const std::size_t step = uidplus ? kUidsPerCommand : update_uids_.size();
  upstream_->run(expunge, nullptr, [this, offset, step](const ImapResult& result) {
    if (!result.ok()) {
      update_rollback(result.text);
      return;
    }
    update_expunge(offset + step);
  });
}

void Pop3Session::update_expunged() {
  context_.metrics.messages_deleted.Increment(static_cast<double>(update_uids_.size()));
  log::info("expunged", {{"session", id_text_}, {"messages", update_uids_.size()}});
  update_done(true, std::to_string(update_uids_.size()) + " messages deleted");
}

void Pop3Session::update_rollback(std::string_view why) {
  // Messages left flagged \Deleted would vanish at the next EXPUNGE of any other client,
  // although the POP3 client was told they were not removed: take the flag off again.
  std::string detail(why);
  if (!upstream_ || !upstream_->usable()) {
    update_done(false, detail);
    return;
  }
  protocol::ImapCommand unflag("UID STORE");
  unflag.raw(protocol::compress_uid_set({update_uids_.begin(), update_uids_.end()}))
      .raw("-FLAGS.SILENT " + deletion_flags());
  upstream_->run(unflag, nullptr, [this, detail](const ImapResult& result) {
    if (!result.ok()) {
      log::error("rollback_failed", {{"session", id_text_}, {"reason", result.text}});
    }
    update_done(false, detail);
  });
}

void Pop3Session::update_done(bool removed, std::string_view detail, RespCode failure_code) {
  if (client_gone_) {
    // The client reset the connection after QUIT; the UPDATE was finished (or rolled
    // back) all the same, so nothing is left half done.
    log::info("update_finished_without_client",
              {{"session", id_text_}, {"removed", removed ? "yes" : "no"}, {"detail", detail}});
  }
  if (removed) {
    reply(protocol::ok_reply("popbridge signing off (" + std::string(detail) + ")"));
    close_gracefully(metrics::SessionEnd::kQuit);
    return;
  }
  log::error("update_failed", {{"session", id_text_}, {"reason", detail}});
  reply(protocol::err_reply(failure_code, "some deleted messages not removed"));
  close_gracefully(metrics::SessionEnd::kUpdateFailed);
}

}  // namespace popbridge::proxy
