// SPDX-License-Identifier: Apache-2.0
// Session lifecycle: start, input, command dispatch, replies, timers and endings.
#include "proxy/pop3/pop3_session.h"

#include <array>

#include "proxy/base/log.h"

namespace popbridge::proxy {
namespace {

using protocol::Pop3Command;
using protocol::Pop3Verb;
using protocol::RespCode;

// Unread pipelined input above this stops reading from the client until it is worked off.
constexpr std::size_t kMaxBufferedInput = 64 * 1024;
// A handshake or a login in progress is bounded by the idle timeout too.

enum StateMask : unsigned { kAuthorization = 1, kTransaction = 2 };

double seconds_since(std::uint64_t start_ns) {
  return static_cast<double>(uv_hrtime() - start_ns) / 1e9;
}

}  // namespace

const Pop3Session::CommandEntry& Pop3Session::command_entry(Pop3Verb verb) {
  static const std::array<CommandEntry, protocol::kPop3VerbCount> table = [] {
    std::array<CommandEntry, protocol::kPop3VerbCount> entries{};
    auto set = [&](Pop3Verb verb, void (Pop3Session::*handler)(Pop3Command&), unsigned states) {
      entries[static_cast<std::size_t>(verb)] = {handler, states};
    };
    set(Pop3Verb::kUser, &Pop3Session::cmd_user, kAuthorization);
    set(Pop3Verb::kPass, &Pop3Session::cmd_pass, kAuthorization);
    set(Pop3Verb::kApop, &Pop3Session::cmd_apop, kAuthorization);
    set(Pop3Verb::kAuth, &Pop3Session::cmd_auth, kAuthorization);
    set(Pop3Verb::kStls, &Pop3Session::cmd_stls, kAuthorization);
    set(Pop3Verb::kCapa, &Pop3Session::cmd_capa, kAuthorization | kTransaction);
    set(Pop3Verb::kQuit, &Pop3Session::cmd_quit, kAuthorization | kTransaction);
    set(Pop3Verb::kStat, &Pop3Session::cmd_stat, kTransaction);
    set(Pop3Verb::kList, &Pop3Session::cmd_list, kTransaction);
    set(Pop3Verb::kUidl, &Pop3Session::cmd_uidl, kTransaction);
    set(Pop3Verb::kRetr, &Pop3Session::cmd_retr, kTransaction);
    set(Pop3Verb::kTop, &Pop3Session::cmd_top, kTransaction);
    set(Pop3Verb::kDele, &Pop3Session::cmd_dele, kTransaction);
    set(Pop3Verb::kRset, &Pop3Session::cmd_rset, kTransaction);
    set(Pop3Verb::kNoop, &Pop3Session::cmd_noop, kTransaction);
    return entries;
  }();
  return table[static_cast<std::size_t>(verb)];
}

Pop3Session::Pop3Session(SessionHost& server, const SessionContext& context,
                         const config::Listener& listener, std::size_t listener_index,
                         ConnectionPtr client, std::uint64_t id)
    : server_(server),
      context_(context),
      listener_(listener),
      listener_metrics_(context.metrics.listener(listener_index)),
      client_(std::move(client)),
      id_(id),
      id_text_(std::to_string(id)),
      reader_(protocol::kMaxAuthLine),
      idle_timer_(context.loop),
      delay_timer_(context.loop),
      authenticator_(context.loop, context.config, context.identity, context.auth_http.get(),
                     context.tokens.get(), context.metrics, id_text_),
      read_ahead_(context.config.limits.read_ahead) {
  Connection::Handler& handler = *this;
  client_->set_handler(&handler);
}

Pop3Session::~Pop3Session() {
  if (store_) {
    store_->close(false);
  }
}

void Pop3Session::start() {
  client_->set_high_watermark(config().limits.client_write_high_watermark);
  client_->set_low_watermark(config().limits.client_write_low_watermark);
  client_address_ = client_->peer_address();
  client_port_ = client_->peer_port();
  listener_metrics_.accepted->Increment();
  listener_metrics_.active->Increment();
  reset_idle_timer();
  client_->start_reading();
  if (listener_.proxy_protocol) {
    state_ = State::kProxyHeader;
    proxy_header_ = std::make_unique<protocol::ProxyProtocolDecoder>();
    // A balancer sends its header at once; a silent peer is not one, and gets nothing
    // said to it in the clear.
    constexpr std::uint64_t kProxyHeaderTimeoutMs = 10'000;
    const auto idle = static_cast<std::uint64_t>(config().limits.idle_timeout.count());
    idle_timer_.start(std::min(kProxyHeaderTimeoutMs, idle), [this] {
      context_.metrics.rejected(metrics::Rejection::kProxyProtocol).Increment();
      abort(metrics::SessionEnd::kTimeout);
    });
    return;
  }
  begin_protocol();
}

void Pop3Session::begin_protocol() {
  log::info("session_start", {{"session", id_text_},
                              {"listener", listener_.name},
                              {"client", client_address_},
                              {"client_port", static_cast<unsigned>(client_port_)}});
  tls_started_ns_ = uv_hrtime();
  if (listener_.tls == config::TlsMode::kImplicit) {
    state_ = State::kHandshake;
    if (!client_->start_tls(context_.server_tls, Connection::Role::kServer, {})) {
      abort(metrics::SessionEnd::kTlsHandshake);
    }
    return;
  }
  send_greeting();
}

void Pop3Session::handle_proxy_header(std::string_view bytes) {
  std::size_t used = 0;
  switch (proxy_header_->feed(bytes, used)) {
    case protocol::ProxyProtocolDecoder::Status::kNeedMore:
      return;
    case protocol::ProxyProtocolDecoder::Status::kError:
      log::warn("proxy_protocol_rejected", {{"session", id_text_},
                                            {"listener", listener_.name},
                                            {"peer", client_->peer_address()},
                                            {"reason", proxy_header_->error()}});
      context_.metrics.rejected(metrics::Rejection::kProxyProtocol).Increment();
      abort(metrics::SessionEnd::kClientClosed);
      return;
    case protocol::ProxyProtocolDecoder::Status::kDone:
      break;
  }
  if (!proxy_header_->header().local) {
    client_address_ = proxy_header_->header().source_address;
    client_port_ = proxy_header_->header().source_port;
  }
  proxy_header_.reset();
  reset_idle_timer();
  begin_protocol();
  // What followed the header in the same read belongs to TLS or to POP3.
  if (state_ != State::kClosing) {
    client_->replay(bytes.substr(used));
  }
}

void Pop3Session::send_greeting() {
  state_ = State::kAuthorization;
  reply(protocol::ok_reply("POP3 gateway ready."));
}

void Pop3Session::on_tls_established() {
  log::info("tls_established", {{"session", id_text_}, {"tls", client_->tls_summary()}});
  listener_metrics_.tls_duration->Observe(seconds_since(tls_started_ns_));
  (client_->tls_summary().rfind("TLSv1.3", 0) == 0 ? listener_metrics_.tls_ok_13
                                                   : listener_metrics_.tls_ok_12)
      ->Increment();
  if (state_ == State::kHandshake) {
    send_greeting();
  }
  // After STLS the state stays AUTHORIZATION (RFC 2595 §4); the client speaks next.
}

void Pop3Session::on_data(std::string_view bytes) {
  if (state_ == State::kClosing) {
    return;
  }
  if (state_ == State::kProxyHeader) {
    handle_proxy_header(bytes);
    return;
  }
  reader_.append(bytes);
  process_input();
  if (reader_.buffered() > kMaxBufferedInput) {
    client_->stop_reading();
  }
}

void Pop3Session::process_input() {
  if (processing_) {
    return;  // the outer call continues with the next line
  }
  processing_ = true;
  // A read-ahead in flight holds the store: the next command waits until it settles.
  while (!busy_ && (state_ == State::kAuthorization || state_ == State::kTransaction) &&
         !client_->above_high_watermark() && !read_ahead_.in_flight()) {
    std::optional<protocol::LineReader::Line> line = reader_.next();
    if (!line && !reader_.overflowing()) {
      break;
    }
    if (!line || line->too_long) {
      // Answered as soon as the limit is passed, LF or not, and closed (as Dovecot and
      // nginx do): a client that sends that much without a line end is not speaking POP3.
      context_.metrics.invalid_command().err->Increment();
      log::info("line_too_long", {{"session", id_text_}, {"client", client_address_}});
      reply(protocol::err_reply(RespCode::kNone, "line too long"));
      close_gracefully(metrics::SessionEnd::kProtocolError);
      break;
    }
    reset_idle_timer();
    dispatch(line->text);
  }
  processing_ = false;
  if (state_ != State::kClosing && !busy_ && reader_.buffered() <= kMaxBufferedInput) {
    client_->start_reading();
  }
}

void Pop3Session::dispatch(std::string_view line) {
  if (sasl_step_ != SaslStep::kNone) {
    handle_sasl_line(line);
    return;
  }
  protocol::Pop3ParseResult parsed = protocol::parse_pop3_command(line);
  if (auto* error = std::get_if<protocol::Pop3ParseError>(&parsed)) {
    context_.metrics.invalid_command().err->Increment();
    reply(protocol::err_reply(RespCode::kNone, error->message));
    return;
  }
  Pop3Command& command = std::get<Pop3Command>(parsed);
  const CommandEntry& entry = command_entry(command.verb);
  const unsigned state_bit = state_ == State::kAuthorization ? kAuthorization : kTransaction;
  counting_ = command.verb;
  timed_command_ = command.verb;
  command_started_ns_ = uv_hrtime();
  if ((entry.states & state_bit) == 0) {
    reply(protocol::err_reply(RespCode::kNone, "command not valid in this state"));
    observe_command();
    return;
  }
  log::debug("command", {{"session", id_text_}, {"command", protocol::verb_name(command.verb)}});
  (this->*entry.handler)(command);
  if (!busy_) {
    observe_command();
  }
}

void Pop3Session::observe_command() {
  if (!timed_command_) {
    return;
  }
  const double seconds = seconds_since(command_started_ns_);
  context_.metrics.command(static_cast<std::size_t>(*timed_command_)).duration->Observe(seconds);
  log::debug("command_done", {{"session", id_text_},
                              {"command", protocol::verb_name(*timed_command_)},
                              {"ms", seconds * 1000}});
  timed_command_.reset();
}

void Pop3Session::reply(std::string_view bytes) {
  if (counting_) {
    const bool ok = !bytes.empty() && bytes[0] == '+';
    metrics::Metrics::Command& command =
        context_.metrics.command(static_cast<std::size_t>(*counting_));
    (ok ? command.ok : command.err)->Increment();
    counting_.reset();
  }
  client_->write(bytes);
}

void Pop3Session::command_done() {
  busy_ = false;
  observe_command();
  sync_byte_metrics();
  reset_idle_timer();
  process_input();
}

void Pop3Session::reset_idle_timer() {
  const std::uint64_t sent_at_arming = client_->bytes_sent();
  idle_timer_.start(static_cast<std::uint64_t>(config().limits.idle_timeout.count()),
                    [this, sent_at_arming] { on_idle_timeout(sent_at_arming); });
}

void Pop3Session::on_idle_timeout(std::uint64_t sent_at_arming) {
  const bool streaming = transfer_ != Transfer::kNone || listing_;
  if (busy_ && streaming && client_->bytes_sent() != sent_at_arming) {
    // A message or listing is still flowing to the client: that is activity, not idleness.
    // A client that stopped reading mid-way makes no progress and times out.
    reset_idle_timer();
    return;
  }
  if ((transfer_ != Transfer::kNone && transfer_started_) || listing_) {
    // Mid-message a status line would read as message text: just drop the connection (no
    // terminator, so the client knows the message or listing is incomplete).
    abort(metrics::SessionEnd::kTimeout);
    return;
  }
  reply(protocol::err_reply(RespCode::kNone, "autologout; idle for too long"));
  close_gracefully(metrics::SessionEnd::kTimeout);
}

// --- endings ----------------------------------------------------------------------------

void Pop3Session::on_disconnected(std::string_view reason) {
  if (state_ == State::kClosing) {
    return;
  }
  if (state_ == State::kUpdate) {
    // QUIT has started changing the mailbox: finish (or roll back) whatever the client
    // does, never leave messages flagged \Deleted with nothing expunged.
    log::info("client_closed_during_update", {{"session", id_text_}, {"reason", reason}});
    client_gone_ = true;
    return;
  }
  log::debug("client_disconnected", {{"session", id_text_}, {"reason", reason}});
  const bool in_handshake = state_ == State::kHandshake;
  state_ = State::kClosing;
  // RFC 1939 §6: a connection that ends without QUIT removes nothing.
  retire_store(true);
  if (in_handshake || (client_->tls_active() && !client_->tls_established())) {
    listener_metrics_.tls_error->Increment();
    context_.metrics.rejected(metrics::Rejection::kTlsHandshake).Increment();
  }
  finish(in_handshake ? metrics::SessionEnd::kTlsHandshake : metrics::SessionEnd::kClientClosed);
}

void Pop3Session::on_store_lost(const StoreResult&) { retire_store(false); }

void Pop3Session::abort(metrics::SessionEnd reason) {
  if (state_ == State::kClosing) {
    return;
  }
  state_ = State::kClosing;
  client_->close();
  retire_store(false);
  finish(reason);
}

void Pop3Session::close_gracefully(metrics::SessionEnd reason) {
  if (state_ == State::kClosing) {
    return;
  }
  state_ = State::kClosing;
  retire_store(true);
  client_->close_after_flush();
  finish(reason);
}

void Pop3Session::finish(metrics::SessionEnd reason) {
  if (finished_) {
    return;
  }
  finished_ = true;
  idle_timer_.stop();
  delay_timer_.stop();
  observe_command();
  sync_byte_metrics();
  unlock_user();
  listener_metrics_.active->Decrement();
  context_.metrics.session_end(reason).Increment();
  if (!tally_.logged_in) {
    log::info("session_end", {{"session", id_text_},
                              {"reason", metrics::name(reason)},
                              {"bytes_in", client_->bytes_received()},
                              {"bytes_out", client_->bytes_sent()}});
  } else {
    // One line that answers "what did this user's client do": Dovecot's pop3_logout_format.
    log::info("session_end", {{"session", id_text_},
                              {"reason", metrics::name(reason)},
                              {"user", log::user(user_)},
                              {"messages", maildrop_.count()},
                              {"mailbox_octets", maildrop_.total_octets()},
                              {"retr", tally_.retrieved},
                              {"retr_octets", tally_.retrieved_octets},
                              {"top", tally_.topped},
                              {"top_octets", tally_.topped_octets},
                              {"deleted", tally_.deleted},
                              {"bytes_in", client_->bytes_received()},
                              {"bytes_out", client_->bytes_sent()}});
  }
  server_.session_finished(this);
}

void Pop3Session::sync_byte_metrics() {
  // Counted as deltas at command boundaries: cheap, and dashboards see long sessions
  // move instead of jumping at their end.
  auto add = [&](metrics::Direction direction, std::uint64_t total, std::uint64_t& counted) {
    if (total > counted) {
      context_.metrics.bytes(direction).Increment(static_cast<double>(total - counted));
      counted = total;
    }
  };
  add(metrics::Direction::kClientIn, client_->bytes_received(), counted_client_in_);
  add(metrics::Direction::kClientOut, client_->bytes_sent(), counted_client_out_);
  if (store_) {
    add(metrics::Direction::kUpstreamIn, store_->bytes_received(), counted_upstream_in_);
    add(metrics::Direction::kUpstreamOut, store_->bytes_sent(), counted_upstream_out_);
  }
}

void Pop3Session::retire_store(bool graceful) {
  if (!store_) {
    return;
  }
  sync_byte_metrics();
  drop_read_ahead();
  read_ahead_.abandon();  // a closed store completes nothing
  counted_upstream_in_ = counted_upstream_out_ = 0;
  context_.metrics.upstream_active.Decrement();
  store_->close(graceful);
  // We may be inside one of its callbacks: it is deleted on a later loop turn.
  server_.dispose(std::move(store_));
  store_.reset();
}

}  // namespace popbridge::proxy
