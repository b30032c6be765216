// SPDX-License-Identifier: Apache-2.0
// The AUTHORIZATION state: capabilities, STLS, USER/PASS and SASL, then the login (the
// Authenticator's plan, the store opened, the snapshot numbered).
#include "protocol/sasl/sasl.h"
#include "proxy/base/log.h"
#include "proxy/pop3/pop3_session.h"
#include "proxy/pop3/uidl_map_file.h"

namespace popbridge::proxy {
namespace {

using protocol::Pop3Command;
using protocol::Pop3Verb;
using protocol::RespCode;

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

}  // namespace

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

bool Pop3Session::refuse_plaintext(metrics::Mechanism mechanism) {
  if (plaintext_allowed()) {
    return false;
  }
  context_.metrics.auth(mechanism, metrics::AuthResult::kPlaintextRefused).Increment();
  reply(protocol::err_reply(RespCode::kAuth,
                            "Plaintext authentication disallowed on non-secure connections"));
  return true;
}

// --- login -----------------------------------------------------------------------------

void Pop3Session::cmd_user(Pop3Command& command) {
  if (refuse_plaintext(metrics::Mechanism::kUser)) {
    return;
  }
  user_ = command.argument;
  reply(protocol::ok_reply("Send your password"));
}

void Pop3Session::cmd_pass(Pop3Command& command) {
  if (refuse_plaintext(metrics::Mechanism::kUser)) {
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
  if (refuse_plaintext(mechanism_of(command.argument))) {
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
      context_.upstream_tls, context_.metrics, observer, context_.logins.get());
  OpenRequest request;
  request.credentials = std::move(credentials);
  request.client_address = client_address_;
  request.client_port = client_port_;
  request.session_id = id_text_;
  request.mailbox = mailbox_override_;
  request.want_guids = config().upstream.uidl_format.needs_guid();
  request.want_xuidls = config().upstream.reuse_xuidl;
  request.want_uidl_map = config().upstream.uidl_map.metadata;
  if (request.want_uidl_map) {
    cached_uidl_map_ = context_.settings->uidl_maps->find(uidl_map_key());
    if (cached_uidl_map_) {
      request.uidl_map_known_for = cached_uidl_map_->uidvalidity;
    }
  }
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
  if (!snapshot.uidls.empty()) {
    reused.assign(std::make_move_iterator(snapshot.uidls.begin()),
                  std::make_move_iterator(snapshot.uidls.end()));
  }
  if (config().upstream.uidl_map.enabled()) {
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

std::string Pop3Session::uidl_map_key() const {
  // The same user may be routed (auth hook) to another server or mailbox.
  const config::Upstream& upstream = upstream_override_ ? *upstream_override_ : config().upstream;
  return user_ + '\n' + upstream.address.to_string() + '\n' +
         (mailbox_override_ ? *mailbox_override_ : upstream.mailbox);
}

std::size_t Pop3Session::apply_uidl_map(const StoreSnapshot& snapshot,
                                        std::vector<std::optional<std::string>>& uidls) {
  std::shared_ptr<const UidlMapRead> held;
  bool fresh = true;
  if (!config().upstream.uidl_map.metadata) {
    held = std::make_shared<const UidlMapRead>(
        read_uidl_map_file(config().upstream.uidl_map.directory, user_));
  } else if (!snapshot.uidl_map_read && cached_uidl_map_ &&
             cached_uidl_map_->uidvalidity == snapshot.uidvalidity) {
    held = cached_uidl_map_->read;  // its problems were logged when it was read
    fresh = false;
  } else {
    UidlMapRead read;
    if (snapshot.uidl_map) {
      read = read_uidl_map_text(*snapshot.uidl_map,
                                "METADATA " + std::string(config::UidlMapStore::kMetadataEntry));
    } else {
      read.problem = snapshot.uidl_map_problem;
    }
    context_.settings->uidl_maps->store(uidl_map_key(), snapshot.uidvalidity, read);
    held = std::make_shared<const UidlMapRead>(std::move(read));
  }
  cached_uidl_map_.reset();
  const UidlMapRead& read = *held;
  if (fresh && !read.problem.empty()) {
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

}  // namespace popbridge::proxy
