// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/imap/imap_client.h"

#include <algorithm>
#include <charconv>

#include "protocol/common/ascii.h"
#include "proxy/base/log.h"

namespace popbridge::proxy {
namespace {

ImapResult::Kind kind_of(protocol::ImapStatusKind kind) {
  switch (kind) {
    case protocol::ImapStatusKind::kOk:
      return ImapResult::Kind::kOk;
    case protocol::ImapStatusKind::kNo:
      return ImapResult::Kind::kNo;
    default:
      return ImapResult::Kind::kBad;
  }
}

void wipe_parts(std::vector<std::string>& parts) {
  for (std::string& part : parts) {
    protocol::wipe(part.data(), part.size());
  }
}

}  // namespace

std::string ImapResult::code_atom() const {
  std::string_view view = code;
  return protocol::ascii_uppercase(view.substr(0, view.find(' ')));
}

std::string_view failure_name(ImapResult::Failure failure) {
  switch (failure) {
    case ImapResult::Failure::kNone:
      return "none";
    case ImapResult::Failure::kConnect:
      return "connect";
    case ImapResult::Failure::kTls:
      return "tls";
    case ImapResult::Failure::kTimeout:
      return "timeout";
    case ImapResult::Failure::kProtocol:
      return "protocol";
    case ImapResult::Failure::kBye:
      return "bye";
    case ImapResult::Failure::kClosed:
      return "closed";
    case ImapResult::Failure::kRefused:
      return "refused";
  }
  return "unknown";
}

ImapClient::ImapClient(uv_loop_t* loop, const config::Upstream& settings, SSL_CTX* tls_context,
                       Observer& observer)
    : loop_(loop),
      settings_(settings),
      tls_context_(tls_context),
      observer_(&observer),
      resolver_(loop),
      parser_(*this),
      timer_(loop) {}

ImapClient::~ImapClient() {
  for (Pending& pending : queue_) {
    if (pending.secret) {
      wipe_parts(pending.parts);
    }
  }
}

void ImapClient::connect(Completion ready) {
  ready_ = std::move(ready);
  state_ = State::kResolving;
  timer_.start(static_cast<std::uint64_t>(settings_.connect_timeout.count()),
               [this] { fail(ImapResult::Failure::kTimeout, "connect timeout"); });
  resolver_.resolve_all(
      settings_.address, [this](int status, std::vector<sockaddr_storage> addresses) {
        if (status != 0) {
          fail(ImapResult::Failure::kConnect,
               "cannot resolve " + settings_.address.host + ": " + uv_strerror(status));
          return;
        }
        addresses_ = std::move(addresses);
        next_address_ = 0;
        connect_next();
      });
}

void ImapClient::connect_next() {
  // Each address in turn (a name may have several, IPv6 and IPv4), all within the one
  // connect_timeout; the last failure is the one reported.
  while (next_address_ < addresses_.size()) {
    const sockaddr_storage& address = addresses_[next_address_++];
    state_ = State::kConnecting;
    connection_ = Connection::create(loop_, this);
    connection_->set_keepalive(
        {static_cast<unsigned>(
             std::chrono::duration_cast<std::chrono::seconds>(settings_.keepalive_idle).count()),
         static_cast<unsigned>(
             std::chrono::duration_cast<std::chrono::seconds>(settings_.keepalive_interval)
                 .count()),
         settings_.keepalive_count});
    const int result = connection_->connect(reinterpret_cast<const sockaddr*>(&address));
    if (result == 0) {
      return;
    }
    connection_.reset();
    last_connect_error_ = uv_strerror(result);
  }
  fail(ImapResult::Failure::kConnect,
       "cannot connect to " + settings_.address.to_string() + ": " + last_connect_error_);
}

void ImapClient::on_connected(int status) {
  if (status != 0) {
    last_connect_error_ = uv_strerror(status);
    if (next_address_ < addresses_.size()) {
      log::debug("upstream_address_failed",
                 {{"address", settings_.address.to_string()}, {"reason", last_connect_error_}});
      connection_.reset();  // released: no further upcall from it
      connect_next();
      return;
    }
    fail(ImapResult::Failure::kConnect,
         "cannot connect to " + settings_.address.to_string() + ": " + last_connect_error_);
    return;
  }
  connection_->start_reading();
  if (settings_.tls == config::TlsMode::kImplicit) {
    state_ = State::kTlsHandshake;
    const std::string& name =
        settings_.server_name.empty() ? settings_.address.host : settings_.server_name;
    if (!connection_->start_tls(tls_context_, Connection::Role::kClient, name)) {
      fail(ImapResult::Failure::kTls, "cannot start TLS");
    }
    return;
  }
  state_ = State::kGreeting;
}

void ImapClient::on_tls_established() {
  if (state_ == State::kTlsHandshake && settings_.tls == config::TlsMode::kImplicit) {
    state_ = State::kGreeting;
    return;
  }
  // STARTTLS done: capabilities from before TLS are void (RFC 3501 §6.2.1).
  capabilities_.clear();
  request_capabilities();
}

void ImapClient::on_data(std::string_view bytes) {
  if (state_ == State::kTlsHandshake) {
    // Plaintext after our STARTTLS completed: an injection attempt or a broken server.
    fail(ImapResult::Failure::kProtocol, "unexpected plaintext after STARTTLS");
    return;
  }
  if (in_flight_ > 0 && !paused_) {
    arm_command_timer();
  }
  if (!parser_.feed(bytes)) {
    fail(ImapResult::Failure::kProtocol, "bad response from upstream: " + parser_.error());
    return;
  }
  if (connection_ && state_ != State::kClosed) {
    connection_->expect_bytes(parser_.literal_left());
  }
}

void ImapClient::on_disconnected(std::string_view reason) {
  if (saw_bye_) {
    fail(ImapResult::Failure::kBye, "upstream said BYE: " + bye_text_);
    return;
  }
  // A connection that ends during the handshake (a certificate that does not verify, a
  // TLS version mismatch) is a TLS failure, not a peer that closed.
  const bool handshaking =
      state_ == State::kTlsHandshake ||
      (connection_ && connection_->tls_active() && !connection_->tls_established());
  fail(handshaking ? ImapResult::Failure::kTls : ImapResult::Failure::kClosed, std::string(reason));
}

void ImapClient::on_status(const protocol::ImapStatus& status) {
  if (state_ == State::kClosed || state_ == State::kTlsHandshake) {
    if (state_ == State::kTlsHandshake) {
      fail(ImapResult::Failure::kProtocol, "unexpected response after STARTTLS");
    }
    return;
  }
  if (status.tag == "*") {
    if (state_ == State::kGreeting) {
      on_greeting(status);
      return;
    }
    if (status.kind == protocol::ImapStatusKind::kBye) {
      saw_bye_ = true;
      bye_text_ = std::string(status.text);
      return;
    }
    std::string atom = protocol::ascii_uppercase(status.code.substr(0, status.code.find(' ')));
    if (atom == "UIDVALIDITY") {
      std::string_view value = status.code.substr(status.code.find(' ') + 1);
      std::uint32_t parsed = 0;
      auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), parsed);
      if (error == std::errc() && end == value.data() + value.size()) {
        uidvalidity_ = parsed;
      }
    } else if (atom == "CAPABILITY") {
      set_capabilities(status.code.substr(status.code.find(' ') + 1));
    } else if (atom == "PERMANENTFLAGS") {
      permanent_flags_ = protocol::ascii_uppercase(status.code.substr(status.code.find(' ') + 1));
    }
    return;
  }
  if (in_flight_ == 0 || status.tag != queue_.front().tag) {
    fail(ImapResult::Failure::kProtocol,
         "response with unknown tag '" + std::string(status.tag) + "'");
    return;
  }
  if (protocol::ascii_uppercase(status.code.substr(0, status.code.find(' '))) == "CAPABILITY") {
    set_capabilities(status.code.substr(status.code.find(' ') + 1));
  }
  ImapResult result;
  result.kind = kind_of(status.kind);
  result.code = std::string(status.code);
  result.text = std::string(status.text);
  complete_current(result);
}

void ImapClient::on_greeting(const protocol::ImapStatus& status) {
  if (status.kind == protocol::ImapStatusKind::kBye) {
    fail(ImapResult::Failure::kRefused,
         "upstream refused the connection: " + std::string(status.text));
    return;
  }
  if (status.kind == protocol::ImapStatusKind::kPreauth) {
    // A pre-authenticated connection would skip our login: this gateway must log in as
    // the client's user, so it cannot use it.
    fail(ImapResult::Failure::kProtocol, "upstream sent PREAUTH");
    return;
  }
  if (protocol::ascii_uppercase(status.code.substr(0, status.code.find(' '))) == "CAPABILITY") {
    set_capabilities(status.code.substr(status.code.find(' ') + 1));
  }
  after_tls_or_greeting();
}

void ImapClient::after_tls_or_greeting() {
  if (settings_.tls == config::TlsMode::kStartTls && !connection_->tls_active()) {
    state_ = State::kStartTls;
    auto issue = [this] {
      if (!has_capability("STARTTLS")) {
        fail(ImapResult::Failure::kTls, "upstream does not offer STARTTLS");
        return;
      }
      send_parts({next_tag() + " STARTTLS\r\n"}, false, nullptr, [this](const ImapResult& result) {
        if (!result.ok()) {
          fail(ImapResult::Failure::kTls, "STARTTLS refused: " + result.text);
          return;
        }
        // Bytes after the OK were sent in the clear and may be injected: the parser
        // drops them with any partial line, and TLS starts from a clean slate.
        parser_.reset();
        state_ = State::kTlsHandshake;
        const std::string& name =
            settings_.server_name.empty() ? settings_.address.host : settings_.server_name;
        if (!connection_->start_tls(tls_context_, Connection::Role::kClient, name)) {
          fail(ImapResult::Failure::kTls, "cannot start TLS");
        }
      });
    };
    if (capabilities_.empty()) {
      state_ = State::kCapability;
      send_parts({next_tag() + " CAPABILITY\r\n"}, false, nullptr,
                 [this, issue](const ImapResult& result) {
                   if (!result.ok()) {
                     fail(ImapResult::Failure::kProtocol, "CAPABILITY failed: " + result.text);
                     return;
                   }
                   issue();
                 });
    } else {
      issue();
    }
    return;
  }
  if (capabilities_.empty()) {
    request_capabilities();
  } else {
    connection_ready();
  }
}

void ImapClient::run(const protocol::ImapCommand& command, FetchSink* sink, Completion done) {
  send_command(command, sink, std::move(done), Flight::kAfterPrevious);
}

void ImapClient::pipeline(const protocol::ImapCommand& command, FetchSink* sink, Completion done) {
  send_command(command, sink, std::move(done), Flight::kPipelined);
}

void ImapClient::send_command(const protocol::ImapCommand& command, FetchSink* sink,
                              Completion done, Flight flight) {
  send_parts(command.render(next_tag(), has_capability("LITERAL+")), false, sink, std::move(done),
             flight);
}

void ImapClient::logout() {
  if (state_ == State::kClosed || !connection_) {
    shutdown();
    return;
  }
  queue_.clear();
  in_flight_ = 0;
  state_ = State::kClosed;
  timer_.stop();
  connection_->write(next_tag() + " LOGOUT\r\n");
  connection_->close_after_flush();
}

void ImapClient::shutdown() {
  state_ = State::kClosed;
  timer_.stop();
  queue_.clear();
  in_flight_ = 0;
  connection_.reset();
}

bool ImapClient::may_store_keyword(std::string_view keyword) const {
  // RFC 3501 §7.1: without PERMANENTFLAGS every flag may be changed permanently; "\*"
  // allows new keywords.
  if (!permanent_flags_) {
    return true;
  }
  const std::string wanted = protocol::ascii_uppercase(keyword);
  std::string_view list = *permanent_flags_;
  while (!list.empty() && (list.front() == '(' || list.front() == ' ')) {
    list.remove_prefix(1);
  }
  while (!list.empty()) {
    const std::size_t end = list.find_first_of(" )");
    const std::string_view flag = list.substr(0, end);
    if (flag == "\\*" || flag == wanted) {
      return true;
    }
    if (end == std::string_view::npos) {
      break;
    }
    list.remove_prefix(end + 1);
  }
  return false;
}

bool ImapClient::has_capability(std::string_view name) const { return capabilities_.has(name); }

void ImapClient::pause_reading() {
  paused_ = true;
  if (connection_) {
    connection_->stop_reading();
  }
  // A paused upstream is waiting for our client, not failing.
  timer_.stop();
}

void ImapClient::resume_reading() {
  paused_ = false;
  if (connection_ && state_ != State::kClosed) {
    connection_->start_reading();
    if (in_flight_ > 0) {
      arm_command_timer();
    }
  }
}

std::uint64_t ImapClient::bytes_received() const {
  return connection_ ? connection_->bytes_received() : 0;
}

std::uint64_t ImapClient::bytes_sent() const { return connection_ ? connection_->bytes_sent() : 0; }

void ImapClient::send_parts(std::vector<std::string> parts, bool secret, FetchSink* sink,
                            Completion done, Flight flight) {
  Pending pending;
  pending.tag = parts.front().substr(0, parts.front().find(' '));
  pending.parts = std::move(parts);
  pending.secret = secret;
  pending.sink = sink;
  pending.done = std::move(done);
  pending.pipelined = flight == Flight::kPipelined && settings_.pipelining;
  queue_.push_back(std::move(pending));
  send_next();
}

bool ImapClient::may_send_now(const Pending& next) const {
  if (in_flight_ == 0) {
    return true;
  }
  // A continuation request always belongs to the newest command in flight, and answers
  // come back in order, so the oldest one in flight is the one a tagged reply completes.
  return next.pipelined && !queue_[in_flight_ - 1].awaits_continuation();
}

void ImapClient::send_next() {
  if (!connection_ || state_ == State::kClosed) {
    return;
  }
  bool sent = false;
  while (in_flight_ < queue_.size() && may_send_now(queue_[in_flight_])) {
    Pending& next = queue_[in_flight_++];
    connection_->write(next.parts[0]);
    next.next_part = 1;
    sent = true;
  }
  if (sent && !paused_) {
    arm_command_timer();
  }
}

void ImapClient::on_continuation(std::string_view) {
  if (in_flight_ == 0) {
    fail(ImapResult::Failure::kProtocol, "unexpected continuation request");
    return;
  }
  Pending& newest = queue_[in_flight_ - 1];
  if (newest.next_part < newest.parts.size()) {
    connection_->write(newest.parts[newest.next_part++]);
  } else {
    connection_->write(newest.final_response + "\r\n");
  }
}

void ImapClient::complete_current(const ImapResult& result) {
  Pending finished = std::move(queue_.front());
  queue_.pop_front();
  --in_flight_;
  if (finished.secret) {
    wipe_parts(finished.parts);
  }
  if (in_flight_ > 0 && !paused_) {
    arm_command_timer();  // the next answer gets a full timeout of its own
  } else {
    timer_.stop();
  }
  send_next();
  if (finished.done) {
    finished.done(result);
  }
}

void ImapClient::fail(ImapResult::Failure failure, std::string reason) {
  if (state_ == State::kClosed) {
    return;
  }
  const bool was_ready = state_ == State::kReady || state_ == State::kLoggingIn;
  state_ = State::kClosed;
  timer_.stop();
  log::warn("upstream_failed", {{"kind", failure_name(failure)}, {"reason", reason}});
  ImapResult result;
  result.kind = ImapResult::Kind::kFailed;
  result.failure = failure;
  result.text = std::move(reason);
  std::deque<Pending> abandoned = std::move(queue_);
  queue_.clear();
  const std::size_t abandoned_in_flight = in_flight_;
  in_flight_ = 0;
  if (connection_) {
    connection_->close();
  }
  for (Pending& pending : abandoned) {
    if (pending.secret) {
      wipe_parts(pending.parts);
    }
  }
  if (ready_) {
    auto ready = std::move(ready_);
    ready_ = nullptr;
    ready(result);
    return;
  }
  if (abandoned_in_flight > 0) {
    // Every command sent hears of it: one pipelined behind another may be the one its
    // owner waits on (a login behind an ID).
    for (std::size_t i = 0; i < abandoned_in_flight; ++i) {
      if (i > 0 && !connection_) {
        break;  // an earlier completion shut the client down: no upcall after that
      }
      if (abandoned[i].done) {
        abandoned[i].done(result);
      }
    }
    return;
  }
  if (was_ready) {
    observer_->on_upstream_lost(result);
  }
}

void ImapClient::set_capabilities(std::string_view space_separated) {
  capabilities_.assign(space_separated);
}

void ImapClient::arm_command_timer() {
  timer_.start(static_cast<std::uint64_t>(settings_.command_timeout.count()), [this] {
    // Waiting for a large read (Connection::expect_bytes), the loop is not woken for a
    // server that sends less than that in the whole timeout: slow, but not silent.
    switch (connection_ ? connection_->check_silence() : Connection::Silence::kSilent) {
      case Connection::Silence::kSlowPeer:
        log::info("upstream_slow",
                  {{"address", settings_.address.to_string()},
                   {"reason", "sent less than " + std::to_string(Connection::kLargeRead / 1024) +
                                  " KiB of a message in upstream.command_timeout"}});
        [[fallthrough]];
      case Connection::Silence::kBytesWaiting:
      case Connection::Silence::kRecordArriving:
        arm_command_timer();
        return;
      case Connection::Silence::kSilent:
        break;
    }
    fail(ImapResult::Failure::kTimeout, "upstream command timeout");
  });
}

std::string ImapClient::next_tag() { return "a" + std::to_string(++tag_counter_); }

FetchSink* ImapClient::sink() const {
  return in_flight_ > 0 && !queue_.empty() ? queue_.front().sink : nullptr;
}

void ImapClient::on_capability(const std::vector<std::string_view>& capabilities) {
  capabilities_.assign(capabilities);
  ++capability_replies_;
}

void ImapClient::on_exists(std::uint32_t count) { exists_ = count; }

void ImapClient::on_expunge(std::uint32_t sequence) {
  if (exists_ > 0) {
    --exists_;
  }
  if (state_ != State::kClosed) {
    observer_->on_expunged(sequence);
  }
}

void ImapClient::on_fetch_begin(std::uint32_t sequence) {
  if (FetchSink* target = sink()) {
    target->on_fetch_begin(sequence);
  }
}

void ImapClient::on_fetch_uid(std::uint32_t uid) {
  if (FetchSink* target = sink()) {
    target->on_fetch_uid(uid);
  }
}

void ImapClient::on_fetch_size(std::uint64_t size) {
  if (FetchSink* target = sink()) {
    target->on_fetch_size(size);
  }
}

void ImapClient::on_fetch_flags(std::string_view flags) {
  if (FetchSink* target = sink()) {
    target->on_fetch_flags(flags);
  }
}

void ImapClient::on_fetch_guid(std::string_view guid) {
  if (FetchSink* target = sink()) {
    target->on_fetch_guid(guid);
  }
}

void ImapClient::on_body_begin(std::string_view section, std::uint64_t origin, std::uint64_t size) {
  if (FetchSink* target = sink()) {
    target->on_body_begin(section, origin, size);
  }
}

void ImapClient::on_body_data(std::string_view chunk) {
  if (FetchSink* target = sink()) {
    target->on_body_data(chunk);
  }
}

void ImapClient::on_body_end() {
  if (FetchSink* target = sink()) {
    target->on_body_end();
  }
}

void ImapClient::on_fetch_end() {
  if (FetchSink* target = sink()) {
    target->on_fetch_end();
  }
}

void ImapClient::on_metadata(std::string_view entry, std::optional<std::string_view> value) {
  if (FetchSink* receiver = sink()) {
    receiver->on_metadata(entry, value);
  }
}

}  // namespace popbridge::proxy
