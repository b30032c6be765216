// SPDX-License-Identifier: Apache-2.0
// The TRANSACTION and UPDATE states: maildrop commands, RETR/TOP streaming and the
// deletions at QUIT, all on the MailStore.
#include <algorithm>
#include <charconv>

#include "protocol/common/invariant.h"
#include "proxy/base/log.h"
#include "proxy/pop3/pop3_session.h"

namespace popbridge::proxy {
namespace {

using protocol::Pop3Command;
using protocol::RespCode;

// Messages per read-ahead batch at most, within limits.read_ahead's octets: the UID FETCH
// line stays short, and a client that stops early leaves little unused.
constexpr std::size_t kReadAheadBatch = 32;

// LIST and UIDL print a line per message, thousands for a client that leaves its mail on
// the server, every poll: numbers go straight into the listing.
void append_decimal(std::string& out, std::uint64_t value) {
  char digits[20];
  const auto printed = std::to_chars(digits, digits + sizeof(digits), value);
  // Pointer and length, not the iterator overload, which takes the general replace path.
  out.append(digits, static_cast<std::size_t>(printed.ptr - digits));
}

}  // namespace

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
  start_listing(false,
                protocol::ok_reply(std::to_string(maildrop_.visible_count()) + " messages (" +
                                   std::to_string(maildrop_.visible_octets()) + " octets)"));
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
  start_listing(true, protocol::ok_reply("unique-id listing follows"));
}

void Pop3Session::start_listing(bool uidl, std::string_view status_line) {
  reply(status_line);
  listing_ = Listing{uidl, 0};
  busy_ = true;
  continue_listing();
}

// Also on_drained's: the lines go straight into the client's queue, a slice at a time,
// until the queue reaches the high watermark; the rest when it has drained.
void Pop3Session::continue_listing() {
  constexpr std::size_t kLinesPerSlice = 1024;
  const std::vector<Maildrop::Message>& messages = maildrop_.messages();
  while (listing_ && !client_->above_high_watermark() && state_ == State::kTransaction) {
    bool written = false;
    client_->write_in_place([&](std::string& queue) {
      written = true;
      const std::size_t end = std::min(messages.size(), listing_->next + kLinesPerSlice);
      for (; listing_->next < end; ++listing_->next) {
        const Maildrop::Message& message = messages[listing_->next];
        if (message.deleted) {
          continue;
        }
        append_decimal(queue, listing_->next + 1);
        queue += ' ';
        if (listing_->uidl) {
          maildrop_.append_uidl(message, queue);
        } else {
          append_decimal(queue, message.size);
        }
        queue += "\r\n";
      }
      if (listing_->next == messages.size()) {
        queue += ".\r\n";
      }
    });
    if (!written || state_ != State::kTransaction) {
      return;  // the connection is closing: nothing was written, nothing more will be
    }
    if (listing_->next == messages.size()) {
      listing_.reset();
      command_done();
      return;
    }
  }
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

// --- commands that need the store ---------------------------------------------------------

bool Pop3Session::require_upstream() {
  if (store_ && store_->usable()) {
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
  // Forwarded so the upstream session lives as long as the POP3 session.
  store_->keep_alive([this](const StoreResult& result) {
    if (result.status == StoreStatus::kLost) {
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
  transfer_number_ = *command.message;
  transfer_uid_ = message->uid;
  transfer_listed_size_ = message->size;
  transfer_started_ = false;
  client_->set_streaming(true);
  stuffer_ = protocol::DotStuffer(config().pop3.workarounds.outlook_no_nuls);
  return message;
}

void Pop3Session::cmd_retr(Pop3Command& command) {
  const Maildrop::Message* message = begin_transfer(command, Transfer::kRetrieve);
  if (message == nullptr) {
    return;
  }
  if (config().pop3.workarounds.oe_ns_eoh) {
    top_filter_ = protocol::TopFilter::whole_message();  // only to see where the header ends
  }
  if (std::optional<ReadAhead::Message> ahead = read_ahead_.take(message->uid)) {
    serve_read_ahead(std::move(*ahead));
    return;
  }
  // What else is held stays: a message of the batch that did not arrive whole (a size
  // that differs, to be looked into below) leaves the ones after it usable.
  store_->fetch(message->uid, message->size, FetchPart::kWhole, *this,
                [this](const StoreResult& result) { finish_transfer(result); });
}

void Pop3Session::cmd_top(Pop3Command& command) {
  const Maildrop::Message* message = begin_transfer(command, Transfer::kTop);
  if (message == nullptr) {
    return;
  }
  drop_read_ahead();
  top_filter_.emplace(command.lines);
  store_->fetch(message->uid, message->size, FetchPart::kTop, *this,
                [this](const StoreResult& result) { finish_transfer(result); });
}

void Pop3Session::on_message_begin(std::optional<std::uint64_t> whole_size) {
  if (transfer_started_ || state_ == State::kClosing) {
    return;
  }
  transfer_started_ = true;
  if (transfer_ == Transfer::kRetrieve) {
    reply(
        protocol::ok_reply(std::to_string(whole_size.value_or(transfer_listed_size_)) + " octets"));
  } else {
    reply(protocol::ok_reply("top of message follows"));
  }
}

bool Pop3Session::on_message_data(std::string_view chunk) {
  if (!transfer_started_ || state_ == State::kClosing) {
    return false;
  }
  if (transfer_ == Transfer::kRetrieve) {
    if (top_filter_) {
      top_filter_->take(chunk);
    }
    emit_body(chunk);
    return true;
  }
  emit_body(top_filter_->take(chunk));
  return !top_filter_->done();
}

void Pop3Session::emit_body(std::string_view data) {
  // Message octets before "+OK" would be read by the client as the status line.
  POPBRIDGE_INVARIANT(transfer_started_);
  if (data.empty()) {
    return;
  }
  client_->write_in_place([&](std::string& queue) { stuffer_.feed(data, queue); });
  apply_backpressure();
}

void Pop3Session::apply_backpressure() {
  if (store_ && client_->above_high_watermark()) {
    store_->pause_reading();
  }
}

void Pop3Session::on_drained() {
  if (store_) {
    store_->resume_reading();
  }
  if (listing_) {
    continue_listing();
    return;
  }
  process_input();
}

void Pop3Session::finish_transfer(const StoreResult& result) {
  const Transfer kind = transfer_;
  transfer_ = Transfer::kNone;
  client_->set_streaming(false);
  const bool header_ended = !top_filter_ || top_filter_->in_body();
  top_filter_.reset();
  if (result.ok()) {
    // The store confirmed the whole message: only now may the client see the terminator
    // (data-integrity rule 1).
    out_.clear();
    if (!header_ended && config().pop3.workarounds.oe_ns_eoh) {
      stuffer_.finish_with_empty_line(out_);
    } else {
      stuffer_.finish(out_);
    }
    client_->write(out_);
    if (kind == Transfer::kTop) {
      ++tally_.topped;
      tally_.topped_octets += stuffer_.octets();
    }
    if (kind == Transfer::kRetrieve) {
      ++tally_.retrieved;
      tally_.retrieved_octets += stuffer_.octets();
      context_.metrics.messages_retrieved.Increment();
      if (stuffer_.octets() != transfer_listed_size_) {
        context_.metrics.retrieve_size_mismatches.Increment();
        log::warn("size_mismatch", {{"session", id_text_},
                                    {"uid", transfer_uid_},
                                    {"listed", transfer_listed_size_},
                                    {"sent", stuffer_.octets()}});
      }
      maybe_read_ahead();
    }
    command_done();
    return;
  }
  if (transfer_started_) {
    fail_transfer(result.detail.empty() ? "upstream failed during transfer" : result.detail);
    return;
  }
  switch (result.status) {
    case StoreStatus::kLost:
      upstream_gone_reply();
      return;
    case StoreStatus::kMissing:
      reply(protocol::err_reply(RespCode::kNone, "message was removed from the mailbox"));
      break;
    default:
      reply(protocol::err_reply(RespCode::kSysTemp, "unable to read the message"));
      break;
  }
  command_done();
}

void Pop3Session::maybe_read_ahead() {
  const std::uint32_t previous = last_retrieved_;
  const std::uint32_t number = transfer_number_;
  last_retrieved_ = number;
  const config::Upstream& upstream = upstream_override_ ? *upstream_override_ : config().upstream;
  // In order (n-1, then n), not when fetching would set \Seen, and not while messages
  // read ahead earlier are still held (the next batch starts when they are used up).
  if (previous == 0 || previous + 1 != number || upstream.mark_seen || read_ahead_.budget() == 0 ||
      read_ahead_.holding() || state_ != State::kTransaction || !store_ || !store_->usable()) {
    return;
  }
  if (store_->fetches_in_batches()) {
    // A pipelining client gains too: its next RETRs are answered from one exchange.
    std::vector<BatchItem> batch;
    std::uint64_t octets = 0;
    for (std::uint32_t ahead = number + 1; batch.size() < kReadAheadBatch; ++ahead) {
      const Maildrop::Message* next = maildrop_.find(ahead);
      if (next == nullptr || octets + next->size > read_ahead_.budget()) {
        break;
      }
      octets += next->size;
      batch.push_back({next->uid, next->size});
    }
    if (!batch.empty()) {
      read_ahead_.start_batch(*store_, std::move(batch), [this] { process_input(); });
    }
    return;
  }
  // One message at a time, a pipelining client gets its answers no sooner.
  const Maildrop::Message* next = maildrop_.find(number + 1);
  if (next == nullptr || reader_.has_line() || !read_ahead_.fits(next->size)) {
    return;
  }
  read_ahead_.start(*store_, next->uid, next->size, [this] { process_input(); });
}

void Pop3Session::serve_read_ahead(ReadAhead::Message message) {
  context_.metrics.read_ahead_used.Increment();
  on_message_begin(message.size);
  on_message_data(message.octets);
  finish_transfer({StoreStatus::kOk, {}});
}

void Pop3Session::drop_read_ahead() {
  if (const std::size_t unused = read_ahead_.drop(); unused > 0) {
    context_.metrics.read_ahead_unused.Increment(static_cast<double>(unused));
  }
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
  if (!store_ || !store_->usable()) {
    update_done({StoreStatus::kLost, "connection to the mail store lost"});
    return;
  }
  busy_ = true;
  update_count_ = uids.size();
  // Only this session's DELEs, each once: the store expunges exactly these UIDs.
  POPBRIDGE_INVARIANT(std::adjacent_find(uids.begin(), uids.end()) == uids.end());
  store_->commit(std::move(uids), [this](const StoreResult& result) { update_done(result); });
}

void Pop3Session::update_done(const StoreResult& result) {
  if (client_gone_) {
    // The client reset the connection after QUIT; the UPDATE was finished (or rolled
    // back) all the same, so nothing is left half done.
    log::info("update_finished_without_client",
              {{"session", id_text_}, {"result", name(result.status)}, {"detail", result.detail}});
  }
  if (result.ok()) {
    tally_.deleted = update_count_;
    context_.metrics.messages_deleted.Increment(static_cast<double>(update_count_));
    log::info("expunged", {{"session", id_text_},
                           {"messages", update_count_},
                           {"result", result.detail}});  // "3 messages moved", ...
    reply(protocol::ok_reply("popbridge signing off (" + result.detail + ")"));
    close_gracefully(metrics::SessionEnd::kQuit);
    return;
  }
  log::error("update_failed", {{"session", id_text_}, {"reason", result.detail}});
  reply(protocol::err_reply(
      result.status == StoreStatus::kPermanent ? RespCode::kSysPerm : RespCode::kSysTemp,
      "some deleted messages not removed"));
  close_gracefully(metrics::SessionEnd::kUpdateFailed);
}

}  // namespace popbridge::proxy
