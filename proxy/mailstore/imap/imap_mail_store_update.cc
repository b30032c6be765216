// SPDX-License-Identifier: Apache-2.0
// The UPDATE state on IMAP: the deletions of a QUIT as upstream.on_delete says (expunge,
// move, hide, keep), all or nothing, with the pending marks that let the next session
// roll back what an interrupted one left.
#include <algorithm>

#include "protocol/imap/imap_writer.h"
#include "proxy/base/log.h"
#include "proxy/mailstore/imap/imap_mail_store.h"

namespace popbridge::proxy {
namespace {

// UIDs per STORE/EXPUNGE command, to keep command lines short for every server.
constexpr std::size_t kUidsPerCommand = 500;

std::vector<unsigned> slice(const std::vector<std::uint32_t>& uids, std::size_t offset) {
  const std::size_t end = std::min(uids.size(), offset + kUidsPerCommand);
  return {uids.begin() + static_cast<std::ptrdiff_t>(offset),
          uids.begin() + static_cast<std::ptrdiff_t>(end)};
}

}  // namespace

void ImapMailStore::commit(std::vector<std::uint32_t> deleted, Done done) {
  commit_done_ = std::move(done);
  deleted_ = std::move(deleted);
  const config::OnDelete& on_delete = settings_.on_delete;
  if (on_delete.action == config::DeleteAction::kKeep) {
    committed({StoreStatus::kOk, std::to_string(deleted_.size()) + " messages kept"});
    return;
  }
  if (!client_->usable()) {
    committed({StoreStatus::kLost, "connection to the mail store lost"});
    return;
  }
  if (on_delete.action == config::DeleteAction::kHide) {
    if (!client_->may_store_keyword(on_delete.keyword)) {
      committed(
          {StoreStatus::kPermanent, "the mailbox does not keep the keyword " + on_delete.keyword});
      return;
    }
    commit_hide(0);
    return;
  }
  // A move in one UID MOVE is all or nothing; a larger one (or a server without MOVE)
  // copies first and then deletes as an expunge does, so a failure part-way leaves every
  // message in place (at worst a copy too many in the folder), never one lost.
  const bool one_move = on_delete.action == config::DeleteAction::kMove &&
                        client_->has_capability("MOVE") && deleted_.size() <= kUidsPerCommand;
  if (one_move) {
    commit_move(true);
    return;
  }
  if (!client_->has_capability("UIDPLUS") && !settings_.expunge_without_uidplus) {
    // A bare EXPUNGE would also remove messages other clients marked \Deleted.
    committed({StoreStatus::kPermanent, "the mail store lacks UIDPLUS"});
    return;
  }
  if (on_delete.action == config::DeleteAction::kMove) {
    commit_copy(0, true);
    return;
  }
  commit_store(0);
}

void ImapMailStore::commit_move(bool may_create) {
  protocol::ImapCommand move("UID MOVE");
  move.raw(protocol::compress_uid_set({deleted_.begin(), deleted_.end()}))
      .astring(settings_.on_delete.folder);
  client_->run(move, nullptr, [this, may_create](const ImapResult& result) {
    if (result.ok()) {
      committed({StoreStatus::kOk, std::to_string(deleted_.size()) + " messages moved"});
      return;
    }
    if (may_create && result.code_atom() == "TRYCREATE") {
      create_folder([this] { commit_move(false); });
      return;
    }
    committed(failure(result, StoreStatus::kTemporary));
  });
}

void ImapMailStore::commit_copy(std::size_t offset, bool may_create) {
  if (offset >= deleted_.size()) {
    commit_store(0);  // every message is in the folder: now delete as an expunge does
    return;
  }
  protocol::ImapCommand copy("UID COPY");
  copy.raw(protocol::compress_uid_set(slice(deleted_, offset))).astring(settings_.on_delete.folder);
  client_->run(copy, nullptr, [this, offset, may_create](const ImapResult& result) {
    if (result.ok()) {
      commit_copy(offset + kUidsPerCommand, may_create);
      return;
    }
    if (may_create && result.code_atom() == "TRYCREATE") {
      create_folder([this, offset] { commit_copy(offset, false); });
      return;
    }
    if (offset > 0) {
      // Copies already made stay in the folder: nothing was removed from the mailbox.
      log::warn("move_incomplete", {{"session", request_.session_id},
                                    {"copied", offset},
                                    {"folder", settings_.on_delete.folder}});
    }
    committed(failure(result, StoreStatus::kTemporary));
  });
}

void ImapMailStore::create_folder(std::function<void()> retry) {
  protocol::ImapCommand create("CREATE");
  create.astring(settings_.on_delete.folder);
  client_->run(create, nullptr, [this, retry = std::move(retry)](const ImapResult& result) {
    // ALREADYEXISTS: another session created it in the meantime.
    if (result.ok() || result.code_atom() == "ALREADYEXISTS") {
      log::info("folder_created",
                {{"session", request_.session_id}, {"folder", settings_.on_delete.folder}});
      retry();
      return;
    }
    log::error("folder_create_failed", {{"session", request_.session_id},
                                        {"folder", settings_.on_delete.folder},
                                        {"reason", result.text}});
    committed(failure(result, StoreStatus::kPermanent));
  });
}

void ImapMailStore::commit_hide(std::size_t offset) {
  if (offset >= deleted_.size()) {
    committed({StoreStatus::kOk, std::to_string(deleted_.size()) + " messages hidden"});
    return;
  }
  protocol::ImapCommand store("UID STORE");
  store.raw(protocol::compress_uid_set(slice(deleted_, offset)))
      .raw("+FLAGS.SILENT (" + settings_.on_delete.keyword + ")");
  client_->run(store, nullptr, [this, offset](const ImapResult& result) {
    if (result.ok()) {
      commit_hide(offset + kUidsPerCommand);
      return;
    }
    if (result.kind == ImapResult::Kind::kFailed) {
      committed(failure(result, StoreStatus::kLost));
      return;
    }
    // All or nothing: what earlier commands hid is shown again.
    protocol::ImapCommand unhide("UID STORE");
    unhide.raw(protocol::compress_uid_set({deleted_.begin(), deleted_.end()}))
        .raw("-FLAGS.SILENT (" + settings_.on_delete.keyword + ")");
    client_->run(unhide, nullptr, [this, refused = result](const ImapResult& undone) {
      if (!undone.ok()) {
        log::error("rollback_failed", {{"session", request_.session_id}, {"reason", undone.text}});
      }
      committed(failure(refused, StoreStatus::kTemporary));
    });
  });
}

std::string ImapMailStore::deletion_flags() const {
  return mark_pending_ ? "(\\Deleted " + std::string(kPendingKeyword) + ")" : "(\\Deleted)";
}

// STORE, and only once every STORE succeeded, EXPUNGE: a refused STORE expunges nothing.
// Each step goes out the moment the previous one is confirmed; if the connection is cut
// in between, the keyword lets the user's next open() restore the flagged messages.
void ImapMailStore::commit_store(std::size_t offset) {
  if (offset >= deleted_.size()) {
    commit_expunge(0);
    return;
  }
  protocol::ImapCommand store("UID STORE");
  store.raw(protocol::compress_uid_set(slice(deleted_, offset)))
      .raw("+FLAGS.SILENT " + deletion_flags());
  client_->run(store, nullptr, [this, offset](const ImapResult& result) {
    if (!result.ok()) {
      if (result.kind == ImapResult::Kind::kFailed) {
        failure(result, StoreStatus::kLost);  // counts it
      }
      commit_rollback(result.text);
      return;
    }
    commit_store(offset + kUidsPerCommand);
  });
}

void ImapMailStore::commit_expunge(std::size_t offset) {
  if (offset >= deleted_.size()) {
    const bool moved = settings_.on_delete.action == config::DeleteAction::kMove;
    committed({StoreStatus::kOk, std::to_string(deleted_.size()) +
                                     (moved ? " messages moved" : " messages deleted")});
    return;
  }
  const bool uidplus = client_->has_capability("UIDPLUS");
  protocol::ImapCommand expunge(uidplus ? "UID EXPUNGE" : "EXPUNGE");
  if (uidplus) {
    expunge.raw(protocol::compress_uid_set(slice(deleted_, offset)));
  }
  const std::size_t step = uidplus ? kUidsPerCommand : deleted_.size();
  client_->run(expunge, nullptr, [this, offset, step](const ImapResult& result) {
    if (!result.ok()) {
      if (result.kind == ImapResult::Kind::kFailed) {
        failure(result, StoreStatus::kLost);  // counts it
      }
      commit_rollback(result.text);
      return;
    }
    commit_expunge(offset + step);
  });
}

void ImapMailStore::commit_rollback(std::string detail) {
  // Messages left flagged \Deleted would vanish at the next EXPUNGE of any other client,
  // although the POP3 client is told they were not removed: take the flag off again.
  if (!client_->usable()) {
    committed({StoreStatus::kLost, detail});
    return;
  }
  protocol::ImapCommand unflag("UID STORE");
  unflag.raw(protocol::compress_uid_set({deleted_.begin(), deleted_.end()}))
      .raw("-FLAGS.SILENT " + deletion_flags());
  client_->run(unflag, nullptr, [this, detail](const ImapResult& result) {
    if (!result.ok()) {
      log::error("rollback_failed", {{"session", request_.session_id}, {"reason", result.text}});
    }
    committed({StoreStatus::kTemporary, detail});
  });
}

void ImapMailStore::committed(const StoreResult& result) {
  Done done = std::move(commit_done_);
  commit_done_ = nullptr;
  if (done) {
    done(result);
  }
}

}  // namespace popbridge::proxy
