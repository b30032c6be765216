// SPDX-License-Identifier: Apache-2.0
// Session lifecycle, command dispatch and the AUTHORIZATION state.
#include "proxy/pop3/pop3_session.h"

#include <array>

#include "protocol/sasl/sasl.h"
#include "proxy/base/log.h"
#include "proxy/pop3/uidl_map_file.h"

namespace popbridge::proxy {
namespace {

using protocol::Pop3Command;
using protocol::Pop3Verb;
using protocol::RespCode;

// Unread pipelined input above this stops reading from the client until it is worked off.
constexpr std::size_t kMaxBufferedInput = 64 * 1024;
// A handshake or a login in progress is bounded by the idle timeout too.

enum StateMask : unsigned { kAuthorization = 1, kTransaction = 2 };

metrics::Mechanism mechanism_of(std::string_view mechanism) {
  if (mechanism == "PLAIN") {
    return metrics::Mechanism::kPlain;
  }
  if (mechanism == "LOGIN") {
    return metrics::Mechanism::kLogin;
  }
  if (mechanism == "XOAUTH2") {
    return metrics::Mechanism::kXoauth2;
  }
  if (mechanism == "OAUTHBEARER") {
    return metrics::Mechanism::kOauthbearer;
  }
  return metrics::Mechanism::kUser;
}

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
                     context.tokens.get(), context.metrics, id_text_) {
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
  while (!busy_ && (state_ == State::kAuthorization || state_ == State::kTransaction) &&
         !client_->above_high_watermark()) {
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
  idle_timer_.start(
      static_cast<std::uint64_t>(config().limits.idle_timeout.count()), [this, sent_at_arming] {
        if (busy_ && transfer_ != Transfer::kNone && client_->bytes_sent() != sent_at_arming) {
          // A message is still flowing to the client: that is activity, not idleness. A
          // client that stopped reading mid-message makes no progress and times out.
          reset_idle_timer();
          return;
        }
        if (transfer_ != Transfer::kNone && transfer_started_) {
          // Mid-message a status line would read as message text: just drop the connection
          // (no terminator, so the client knows the message is incomplete).
          abort(metrics::SessionEnd::kTimeout);
          return;
        }
        reply(protocol::err_reply(RespCode::kNone, "autologout; idle for too long"));
        close_gracefully(metrics::SessionEnd::kTimeout);
      });
}

// --- capabilities and STLS -------------------------------------------------------------

bool Pop3Session::plaintext_allowed() const {
  return client_->tls_established() || config().auth.allow_plaintext;
}

void Pop3Session::cmd_capa(Pop3Command&) {
  out_.clear();
  out_ += "+OK Capability list follows\r\n";
  out_ += "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n";
  // RFC 2449 §5: what AUTHORIZATION offers is announced in TRANSACTION too.
  if (plaintext_allowed()) {
    out_ += "USER\r\nSASL";
    for (std::string_view mechanism : mechanisms()) {
      out_ += ' ';
      out_ += mechanism;
    }
    out_ += "\r\n";
  }
  if (state_ == State::kAuthorization && listener_.tls == config::TlsMode::kStartTls &&
      !client_->tls_active() && context_.server_tls != nullptr) {
    out_ += "STLS\r\n";
  }
  // RFC 2449: EXPIRE NEVER when a DELE does not remove the message from the mail store.
  if (config().upstream.on_delete.action != config::DeleteAction::kExpunge) {
    out_ += "EXPIRE NEVER\r\n";
  }
  if (const auto delay = config().pop3.login_delay; delay.count() > 0) {
    out_ += "LOGIN-DELAY " +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(delay).count()) +
            "\r\n";
  }
  out_ += "IMPLEMENTATION popbridge\r\n.\r\n";
  reply(out_);
}

void Pop3Session::cmd_stls(Pop3Command&) {
  if (listener_.tls != config::TlsMode::kStartTls || context_.server_tls == nullptr) {
    reply(protocol::err_reply(RespCode::kNone, "STLS not available on this port"));
    return;
  }
  if (client_->tls_active()) {
    reply(protocol::err_reply(RespCode::kNone, "TLS already active"));
    return;
  }
  reply(protocol::ok_reply("Begin TLS negotiation"));
  // Whatever the client sent after the STLS line was sent in the clear and could have
  // been injected by an attacker (CVE-2011-0411 class): it is never parsed.
  reader_.discard();
  user_.clear();
  if (!client_->start_tls(context_.server_tls, Connection::Role::kServer, {})) {
    abort(metrics::SessionEnd::kTlsHandshake);
  }
}

// --- login -----------------------------------------------------------------------------

void Pop3Session::cmd_user(Pop3Command& command) {
  if (!plaintext_allowed()) {
    context_.metrics.auth(metrics::Mechanism::kUser, metrics::AuthResult::kPlaintextRefused)
        .Increment();
    reply(protocol::err_reply(RespCode::kAuth,
                              "Plaintext authentication disallowed on non-secure connections"));
    return;
  }
  user_ = command.argument;
  reply(protocol::ok_reply("Send your password"));
}

void Pop3Session::cmd_pass(Pop3Command& command) {
  if (!plaintext_allowed()) {
    context_.metrics.auth(metrics::Mechanism::kUser, metrics::AuthResult::kPlaintextRefused)
        .Increment();
    reply(protocol::err_reply(RespCode::kAuth,
                              "Plaintext authentication disallowed on non-secure connections"));
    return;
  }
  if (user_.empty()) {
    reply(protocol::err_reply(RespCode::kNone, "USER first"));
    return;
  }
  std::string user = std::move(user_);
  user_.clear();
  begin_login("USER", std::move(user), std::move(command.secret), false);
}

void Pop3Session::cmd_apop(Pop3Command&) {
  // APOP needs the cleartext password on our side, which a gateway never has.
  reply(protocol::err_reply(RespCode::kNone, "APOP not supported"));
}

bool Pop3Session::tokens_allowed() const {
  // A client's own bearer token can only be handed on: it proves nothing to the gateway.
  return config().auth.mode == config::AuthMode::kPassthrough &&
         config().upstream.login.mode == config::UpstreamLoginMode::kPassthrough;
}

bool Pop3Session::token_offered(std::string_view mechanism) const {
  // Until a session has reached the upstream, a token mechanism is offered; once one
  // has seen the upstream lack it, it is not, rather than failing every such login.
  const UpstreamFacts& facts = *context_.settings->facts;
  return tokens_allowed() && (mechanism == "XOAUTH2" ? facts.xoauth2 : facts.oauthbearer) != 0;
}

std::vector<std::string_view> Pop3Session::mechanisms() const {
  std::vector<std::string_view> offered{"PLAIN", "LOGIN"};
  for (std::string_view token : {"XOAUTH2", "OAUTHBEARER"}) {
    if (token_offered(token)) {
      offered.push_back(token);
    }
  }
  return offered;
}

void Pop3Session::cmd_auth(Pop3Command& command) {
  if (command.argument.empty()) {
    // Outlook asks with a bare AUTH which mechanisms exist.
    std::string listing = "+OK\r\n";
    if (plaintext_allowed()) {
      for (std::string_view mechanism : mechanisms()) {
        listing += mechanism;
        listing += "\r\n";
      }
    }
    reply(listing + ".\r\n");
    return;
  }
  if (!plaintext_allowed()) {
    context_.metrics.auth(mechanism_of(command.argument), metrics::AuthResult::kPlaintextRefused)
        .Increment();
    reply(protocol::err_reply(RespCode::kAuth,
                              "Plaintext authentication disallowed on non-secure connections"));
    return;
  }
  const std::string& mechanism = command.argument;
  const bool token = mechanism == "XOAUTH2" || mechanism == "OAUTHBEARER";
  if ((mechanism != "PLAIN" && mechanism != "LOGIN" && !token) ||
      (token && !token_offered(mechanism))) {
    if (token && tokens_allowed()) {
      log::info("token_mechanism_unavailable",
                {{"session", id_text_}, {"mechanism", mechanism}, {"reason", "upstream lacks it"}});
    }
    reply(protocol::err_reply(RespCode::kNone, "unsupported authentication mechanism"));
    return;
  }
  login_mechanism_ = mechanism;
  sasl_step_ = mechanism == "LOGIN" ? SaslStep::kLoginUser
               : token              ? SaslStep::kTokenResponse
                                    : SaslStep::kPlainResponse;
  if (!command.initial_response) {
    // RFC 5034: a mechanism that starts with the client gets an empty challenge. Clients
    // tuned for Microsoft's POP3 send XOAUTH2 this way, on a second line.
    counting_.reset();  // a challenge is not the command's answer; the login result is
    reply(sasl_step_ == SaslStep::kLoginUser ? "+ VXNlcm5hbWU6\r\n" : "+ \r\n");
    return;
  }
  handle_sasl_line(command.initial_response->view());
}

void Pop3Session::handle_sasl_line(std::string_view line) {
  const SaslStep step = sasl_step_;
  sasl_step_ = SaslStep::kNone;
  counting_ = Pop3Verb::kAuth;
  protocol::SaslResponse response = protocol::decode_sasl_response(line);
  if (response.kind == protocol::SaslResponse::Kind::kCancel) {
    reply(protocol::err_reply(RespCode::kNone, "authentication cancelled"));
    return;
  }
  if (response.kind == protocol::SaslResponse::Kind::kInvalid) {
    reply(protocol::err_reply(RespCode::kNone, "invalid base64 in authentication exchange"));
    return;
  }
  switch (step) {
    case SaslStep::kPlainResponse: {
      std::optional<protocol::PlainCredentials> credentials =
          protocol::parse_sasl_plain(response.data.view());
      if (!credentials) {
        reply(protocol::err_reply(RespCode::kAuth, "malformed PLAIN response"));
        return;
      }
      if (!credentials->authzid.empty() && credentials->authzid != credentials->authcid) {
        // Acting as another user is for the gateway's own master login, not for clients.
        login_failed(RespCode::kAuth, "Authentication failed.",
                     metrics::AuthResult::kBadCredentials);
        return;
      }
      begin_login("PLAIN", std::move(credentials->authcid), std::move(credentials->password),
                  false);
      return;
    }
    case SaslStep::kTokenResponse: {
      std::optional<protocol::BearerCredentials> credentials =
          login_mechanism_ == "XOAUTH2" ? protocol::parse_xoauth2(response.data.view())
                                        : protocol::parse_oauthbearer(response.data.view());
      if (!credentials || credentials->user.empty()) {
        reply(protocol::err_reply(RespCode::kAuth, "malformed " + login_mechanism_ + " response"));
        return;
      }
      begin_login(login_mechanism_, std::move(credentials->user), std::move(credentials->token),
                  true);
      return;
    }
    case SaslStep::kLoginUser:
      if (response.data.empty()) {
        reply(protocol::err_reply(RespCode::kAuth, "empty user name"));
        return;
      }
      user_ = std::string(response.data.view());
      sasl_step_ = SaslStep::kLoginPassword;
      counting_.reset();
      client_->write("+ UGFzc3dvcmQ6\r\n");
      return;
    case SaslStep::kLoginPassword: {
      std::string user = std::move(user_);
      user_.clear();
      begin_login("LOGIN", std::move(user), std::move(response.data), false);
      return;
    }
    case SaslStep::kNone:
      break;
  }
}

void Pop3Session::begin_login(std::string_view mechanism, std::string user, protocol::Secret secret,
                              bool token) {
  login_mechanism_ = std::string(mechanism);
  user_ = std::move(user);
  busy_ = true;
  idle_timer_.stop();
  LoginAttempt attempt;
  attempt.user = user_;
  attempt.secret = std::move(secret);
  if (token) {
    attempt.mechanism = mechanism == "XOAUTH2" ? UpstreamCredentials::Mechanism::kXoauth2
                                               : UpstreamCredentials::Mechanism::kOauthbearer;
  }
  attempt.attempt = failed_logins_ + 1;
  attempt.client_address = client_address_;
  attempt.tls = client_->tls_established();
  authenticator_.authenticate(std::move(attempt), [this](Authenticator::Outcome outcome) {
    login_planned(std::move(outcome));
  });
}

void Pop3Session::login_planned(Authenticator::Outcome outcome) {
  if (const auto* refused = std::get_if<LoginRefusal>(&outcome)) {
    hook_wait_ = refused->wait;
    switch (refused->kind) {
      case LoginRefusal::Kind::kBadCredentials:
        login_failed(RespCode::kAuth,
                     refused->text.empty() ? "Authentication failed." : refused->text,
                     metrics::AuthResult::kBadCredentials);
        return;
      case LoginRefusal::Kind::kTemporary:
        login_failed(RespCode::kSysTemp,
                     refused->text.empty() ? "Temporary failure, try again later." : refused->text,
                     metrics::AuthResult::kUpstreamUnavailable);
        return;
      case LoginRefusal::Kind::kPermanent:
        login_failed(RespCode::kSysPerm,
                     refused->text.empty() ? "Unable to log in." : refused->text,
                     metrics::AuthResult::kUpstreamUnavailable);
        return;
    }
  }
  LoginPlan& plan = std::get<LoginPlan>(outcome);
  // With passthrough only the upstream knows whether the password is right, so the lock
  // waits for its answer there.
  if (config().auth.mode != config::AuthMode::kPassthrough && !lock_user()) {
    return;
  }
  upstream_override_ = std::move(plan.route);
  mailbox_override_ = std::move(plan.mailbox);
  open_store(std::move(plan.credentials));
}

void Pop3Session::open_store(UpstreamCredentials credentials) {
  context_.metrics.upstream_active.Increment();
  MailStore::Observer& observer = *this;
  store_ = context_.settings->make_store(
      context_.loop, upstream_override_ ? *upstream_override_ : config().upstream,
      context_.upstream_tls, context_.metrics, observer);
  OpenRequest request;
  request.credentials = std::move(credentials);
  request.client_address = client_address_;
  request.client_port = client_port_;
  request.session_id = id_text_;
  request.mailbox = mailbox_override_;
  request.want_guids = config().upstream.uidl_format.needs_guid();
  request.want_xuidls = config().upstream.reuse_xuidl;
  store_->open(std::move(request), [this](const StoreResult& result, StoreSnapshot snapshot) {
    store_opened(result, std::move(snapshot));
  });
}

void Pop3Session::store_opened(const StoreResult& result, StoreSnapshot snapshot) {
  UpstreamFacts& facts = *context_.settings->facts;
  if (auto offers = store_->accepts(UpstreamCredentials::Mechanism::kXoauth2)) {
    facts.xoauth2 = *offers ? 1 : 0;
  }
  if (auto offers = store_->accepts(UpstreamCredentials::Mechanism::kOauthbearer)) {
    facts.oauthbearer = *offers ? 1 : 0;
  }
  // The one table from the store's answer at login to what the client hears.
  const bool gateway_login =
      config().upstream.login.mode != config::UpstreamLoginMode::kPassthrough;
  switch (result.status) {
    case StoreStatus::kOk:
      break;
    case StoreStatus::kRejected:
      if (gateway_login) {
        // Revoked or expired early: the next login must not present it again.
        authenticator_.upstream_refused(user_);
        // The client's credentials were good; the gateway's own ones were refused.
        log::error("upstream_login_refused",
                   {{"session", id_text_}, {"user", log::user(user_)}, {"reason", result.detail}});
        login_failed(RespCode::kSysPerm, "The mail store refused the gateway's login.",
                     metrics::AuthResult::kUpstreamUnavailable);
        return;
      }
      // The text is the same whether the user exists or not (RFC 8314 §4.1).
      login_failed(RespCode::kAuth, "Authentication failed.", metrics::AuthResult::kBadCredentials);
      return;
    case StoreStatus::kInUse:
      login_failed(RespCode::kInUse, "Mailbox in use.", metrics::AuthResult::kInUse);
      return;
    case StoreStatus::kPermanent:
      login_failed(RespCode::kSysPerm, "Unable to open the maildrop.",
                   metrics::AuthResult::kUpstreamUnavailable);
      return;
    case StoreStatus::kTemporary:
    case StoreStatus::kMissing:
    case StoreStatus::kLost:
    case StoreStatus::kCount:
      login_failed(RespCode::kSysTemp, "Temporary failure, try again later.",
                   metrics::AuthResult::kUpstreamUnavailable);
      return;
  }
  if (config().auth.mode == config::AuthMode::kPassthrough && !lock_user()) {
    return;
  }
  if (!admit_login()) {
    return;
  }
  hidden_ = snapshot.hidden;
  if (snapshot.restored > 0) {
    context_.metrics.deletions_rolled_back.Increment(static_cast<double>(snapshot.restored));
    log::warn("deletions_rolled_back",
              {{"session", id_text_}, {"user", log::user(user_)}, {"messages", snapshot.restored}});
  }
  const std::string& mailbox = mailbox_override_ ? *mailbox_override_ : config().upstream.mailbox;
  if (const auto before = context_.mailboxes.record(user_ + '\n' + mailbox, snapshot.uidvalidity)) {
    context_.metrics.uidvalidity_changes.Increment();
    log::warn("uidvalidity_changed", {{"session", id_text_},
                                      {"user", log::user(user_)},
                                      {"mailbox", mailbox},
                                      {"before", *before},
                                      {"now", snapshot.uidvalidity}});
  }
  std::vector<std::optional<std::string>> reused = std::move(snapshot.xuidls);
  if (!config().upstream.uidl_map.directory.empty()) {
    mapped_ = apply_uidl_map(snapshot, reused);
  }
  std::vector<Maildrop::Message> messages;
  messages.reserve(snapshot.messages.size());
  for (const StoreMessage& message : snapshot.messages) {
    messages.push_back({message.uid, message.size, false});
  }
  maildrop_ = Maildrop(std::move(messages), std::move(snapshot.guids), snapshot.uidvalidity,
                       config().upstream.uidl_format, std::move(reused));
  finish_login();
}

std::size_t Pop3Session::apply_uidl_map(const StoreSnapshot& snapshot,
                                        std::vector<std::optional<std::string>>& uidls) {
  const UidlMapRead read = read_uidl_map_file(config().upstream.uidl_map.directory, user_);
  if (!read.problem.empty()) {
    log::warn("uidl_map_problem",
              {{"session", id_text_}, {"user", log::user(user_)}, {"problem", read.problem}});
  }
  if (!read.map) {
    return 0;
  }
  if (read.map->uidvalidity != snapshot.uidvalidity) {
    // The mailbox was rebuilt since the map was written: its UIDs name other messages
    // now, so no old UIDL can be trusted (fresh ones mean a download, never a loss).
    log::warn("uidl_map_stale", {{"session", id_text_},
                                 {"user", log::user(user_)},
                                 {"map_uidvalidity", read.map->uidvalidity},
                                 {"uidvalidity", snapshot.uidvalidity}});
    return 0;
  }
  uidls.resize(snapshot.messages.size());
  std::size_t mapped = 0;
  for (std::size_t i = 0; i < snapshot.messages.size(); ++i) {
    if (auto found = read.map->uidls.find(snapshot.messages[i].uid);
        found != read.map->uidls.end()) {
      uidls[i] = found->second;  // wins over an X-UIDL header: the map says what was seen
      ++mapped;
    }
  }
  return mapped;
}

void Pop3Session::login_failed(RespCode code, std::string_view text, metrics::AuthResult result) {
  retire_store(false);
  const bool credentials = code == RespCode::kAuth;
  if (credentials) {
    ++failed_logins_;
  }
  // Each attempt is counted once: the one that reaches auth.max_attempts (and closes the
  // connection) as rate_limited, instead of also as bad_credentials.
  const bool last_attempt = credentials && failed_logins_ >= config().auth.max_attempts;
  if (last_attempt) {
    result = metrics::AuthResult::kRateLimited;
  }
  context_.metrics.auth(mechanism_of(login_mechanism_), result).Increment();
  log::info("login_failed", {{"session", id_text_},
                             {"user", log::user(user_)},
                             {"client", client_address_},
                             {"mechanism", login_mechanism_},
                             {"result", metrics::name(result)}});
  unlock_user();
  busy_ = true;
  // What the auth hook asked for (Auth-Wait), or the pause after a hook failure.
  config::Duration delay = hook_wait_;
  hook_wait_ = {};
  if (credentials) {
    // Slow down password guessing: the delay grows with recent failures from this
    // address or for this user, and the reply comes only after it.
    delay = std::max(context_.guard.record_failure(config().auth, client_address_, user_), delay);
  }
  upstream_override_.reset();
  mailbox_override_.reset();
  user_.clear();
  std::string message = protocol::err_reply(code, text);
  delay_timer_.start(static_cast<std::uint64_t>(delay.count()), [this, message, last_attempt] {
    counting_ = login_verb();
    reply(message);
    if (last_attempt) {
      close_gracefully(metrics::SessionEnd::kAuthFailures);
      return;
    }
    command_done();
  });
}

Pop3Verb Pop3Session::login_verb() const {
  // The command whose answer a login result is: PASS for USER/PASS, AUTH for SASL.
  return login_mechanism_ == "USER" ? Pop3Verb::kPass : Pop3Verb::kAuth;
}

bool Pop3Session::lock_user() {
  if (!config().auth.exclusive_sessions) {
    return true;
  }
  if (!context_.guard.lock_user(user_)) {
    // RFC 2449 [IN-USE]: said only to a client whose credentials were good, so it
    // tells a guesser nothing.
    login_failed(RespCode::kInUse, "Mailbox in use by another session.",
                 metrics::AuthResult::kInUse);
    return false;
  }
  locked_user_ = user_;
  return true;
}

bool Pop3Session::admit_login() {
  const config::Duration delay = config().pop3.login_delay;
  if (delay.count() == 0) {
    return true;
  }
  const std::optional<config::Duration> left = context_.guard.admit_login(user_, delay);
  if (!left) {
    return true;
  }
  // RFC 2449 [LOGIN-DELAY]: after good credentials only, like [IN-USE].
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(*left).count() + 1;
  login_failed(RespCode::kLoginDelay,
               "Logged in too recently; try again in " + std::to_string(seconds) + " seconds.",
               metrics::AuthResult::kLoginDelay);
  return false;
}

void Pop3Session::unlock_user() {
  if (!locked_user_.empty()) {
    context_.guard.unlock_user(locked_user_);
    locked_user_.clear();
  }
}

void Pop3Session::finish_login() {
  state_ = State::kTransaction;
  tally_.logged_in = true;
  context_.guard.record_success(user_);
  context_.metrics.auth(mechanism_of(login_mechanism_), metrics::AuthResult::kSuccess).Increment();
  log::info("login", {{"session", id_text_},
                      {"user", log::user(user_)},
                      {"mechanism", login_mechanism_},
                      {"messages", maildrop_.count()},
                      {"hidden", hidden_},
                      {"mapped", mapped_},
                      {"upstream_tls", store_->tls_summary()}});
  counting_ = login_verb();
  reply(protocol::ok_reply("Logged in, " + std::to_string(maildrop_.visible_count()) +
                           " messages (" + std::to_string(maildrop_.visible_octets()) +
                           " octets)"));
  command_done();
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
  counted_upstream_in_ = counted_upstream_out_ = 0;
  context_.metrics.upstream_active.Decrement();
  store_->close(graceful);
  // We may be inside one of its callbacks: it is deleted on a later loop turn.
  server_.dispose(std::move(store_));
  store_.reset();
}

}  // namespace popbridge::proxy
