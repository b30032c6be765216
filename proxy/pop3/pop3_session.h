// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"
#include "metrics/metrics.h"
#include "protocol/common/proxy_protocol.h"
#include "protocol/common/secret.h"
#include "protocol/pop3/line_reader.h"
#include "protocol/pop3/pop3_command.h"
#include "protocol/pop3/pop3_reply.h"
#include "proxy/base/uv_handle.h"
#include "proxy/identity/authenticator.h"
#include "proxy/mailstore/mail_store.h"
#include "proxy/net/connection.h"
#include "proxy/pop3/maildrop.h"
#include "proxy/pop3/read_ahead.h"
#include "proxy/pop3/session_context.h"

namespace popbridge::proxy {

// One POP3 client and, once it has logged in, its mailbox: one MailStore, whatever the
// upstream speaks (the session never sees IMAP or HTTP).
//
// States (RFC 1939 §3): kHandshake (implicit TLS) -> kAuthorization -> kTransaction ->
// kUpdate -> kClosing. Commands are taken one at a time (PIPELINING: a pipelined batch
// waits in the LineReader while a command is busy upstream).
//
// Numbering: see Maildrop (POP3 number n <-> index n-1 <-> UID), fixed at login.
//
// Data integrity: RETR/TOP write the terminating "." only after the store confirmed the
// whole message; any failure before that closes the client connection without it.
// Nothing is changed upstream before QUIT in TRANSACTION.
class Pop3Session final : Connection::Handler, MailStore::Observer, MessageSink {
 public:
  Pop3Session(SessionHost& server, const SessionContext& context, const config::Listener& listener,
              std::size_t listener_index, ConnectionPtr client, std::uint64_t id);
  ~Pop3Session() override;
  Pop3Session(const Pop3Session&) = delete;
  Pop3Session& operator=(const Pop3Session&) = delete;

  void start();
  // Closes at once without UPDATE (shutdown).
  void abort(metrics::SessionEnd reason);
  // A QUIT is being carried out upstream.
  bool updating() const { return state_ == State::kUpdate; }

 private:
  enum class State { kProxyHeader, kHandshake, kAuthorization, kTransaction, kUpdate, kClosing };
  enum class SaslStep { kNone, kPlainResponse, kTokenResponse, kLoginUser, kLoginPassword };
  enum class Transfer { kNone, kRetrieve, kTop };
  using Handler = void (Pop3Session::*)(protocol::Pop3Command&);
  struct CommandEntry {
    Handler handler = nullptr;
    unsigned states = 0;  // bit 0: AUTHORIZATION, bit 1: TRANSACTION
  };
  // The dispatch table: handler and valid states for each verb.
  static const CommandEntry& command_entry(protocol::Pop3Verb verb);

  // Connection::Handler (the client side)
  void on_tls_established() override;
  void on_data(std::string_view bytes) override;
  void on_drained() override;
  void on_disconnected(std::string_view reason) override;
  // MailStore::Observer
  void on_store_lost(const StoreResult& why) override;
  // MessageSink
  void on_message_begin(std::optional<std::uint64_t> whole_size) override;
  bool on_message_data(std::string_view chunk) override;

  void send_greeting();
  void begin_protocol();
  void handle_proxy_header(std::string_view bytes);
  void process_input();
  void dispatch(std::string_view line);
  void handle_sasl_line(std::string_view line);

  // Command handlers, one per verb (see the table in pop3_session.cc).
  void cmd_capa(protocol::Pop3Command& command);
  void cmd_stls(protocol::Pop3Command& command);
  void cmd_user(protocol::Pop3Command& command);
  void cmd_pass(protocol::Pop3Command& command);
  void cmd_apop(protocol::Pop3Command& command);
  void cmd_auth(protocol::Pop3Command& command);
  void cmd_quit(protocol::Pop3Command& command);
  void cmd_stat(protocol::Pop3Command& command);
  void cmd_list(protocol::Pop3Command& command);
  void cmd_uidl(protocol::Pop3Command& command);
  void start_listing(bool uidl, std::string_view status_line);
  void continue_listing();
  void cmd_retr(protocol::Pop3Command& command);
  void cmd_top(protocol::Pop3Command& command);
  void cmd_dele(protocol::Pop3Command& command);
  void cmd_rset(protocol::Pop3Command& command);
  void cmd_noop(protocol::Pop3Command& command);

  // Login: connect upstream, log in, SELECT, snapshot.
  bool plaintext_allowed() const;
  // Without TLS (and auth.allow_plaintext off): -ERR [AUTH], counted; true if refused.
  bool refuse_plaintext(metrics::Mechanism mechanism);
  bool tokens_allowed() const;
  bool token_offered(std::string_view mechanism) const;
  std::vector<std::string_view> mechanisms() const;
  // Login: check the client (auth.mode), choose the upstream credentials
  // (upstream.login.mode), connect, log in, SELECT, snapshot.
  void begin_login(std::string_view mechanism, std::string user, protocol::Secret secret,
                   bool token);
  // upstream.uidl_map: puts the user's old UIDLs into `uidls` (one per snapshot message);
  // how many messages got one.
  std::size_t apply_uidl_map(const StoreSnapshot& snapshot,
                             std::vector<std::optional<std::string>>& uidls);
  // upstream.uidl_map.store: metadata: the cache key (user, server, mailbox).
  std::string uidl_map_key() const;
  void login_planned(Authenticator::Outcome outcome);
  void open_store(UpstreamCredentials credentials);
  void store_opened(const StoreResult& result, StoreSnapshot snapshot);
  // auth.exclusive_sessions: false (and -ERR [IN-USE] sent) if another session has the user.
  bool lock_user();
  void unlock_user();
  bool admit_login();
  void login_failed(protocol::RespCode code, std::string_view text, metrics::AuthResult result);
  protocol::Pop3Verb login_verb() const;
  void finish_login();
  // QUIT in TRANSACTION.
  void update_done(const StoreResult& result);

  // Message transfer (RETR, TOP). begin_transfer answers -ERR itself and returns null
  // when the message or the store is not there.
  const Maildrop::Message* begin_transfer(const protocol::Pop3Command& command, Transfer kind);
  void finish_transfer(const StoreResult& result);
  // After RETR n: fetch n+1 while the client reads n, when it retrieves in order.
  void maybe_read_ahead();
  // Answers the RETR begun by begin_transfer from a read-ahead message.
  void serve_read_ahead(ReadAhead::Message message);
  void drop_read_ahead();
  void emit_body(std::string_view data);
  void apply_backpressure();

  void reply(std::string_view bytes);
  void command_done();
  void on_idle_timeout(std::uint64_t sent_at_arming);
  void reset_idle_timer();
  void close_gracefully(metrics::SessionEnd reason);
  void finish(metrics::SessionEnd reason);
  void observe_command();
  void sync_byte_metrics();
  void fail_transfer(std::string_view why);
  void upstream_gone_reply();
  bool require_upstream();
  void retire_store(bool graceful);
  const config::Config& config() const { return context_.config; }

  SessionHost& server_;
  const SessionContext context_;
  const config::Listener& listener_;
  metrics::Metrics::Listener& listener_metrics_;
  ConnectionPtr client_;
  std::uint64_t id_;
  std::string id_text_;
  State state_ = State::kAuthorization;
  protocol::LineReader reader_;
  std::unique_ptr<protocol::ProxyProtocolDecoder> proxy_header_;  // until the header is read
  std::string client_address_;  // the peer, or the PROXY header's source
  std::uint16_t client_port_ = 0;
  bool busy_ = false;                           // a command is waiting for the upstream or a delay
  bool processing_ = false;                     // process_input() is on the stack
  std::optional<protocol::Pop3Verb> counting_;  // command whose first reply line is counted
  Timer idle_timer_;
  Timer delay_timer_;

  // AUTHORIZATION
  std::string user_;  // from USER, or the SASL step in progress
  SaslStep sasl_step_ = SaslStep::kNone;
  std::uint32_t failed_logins_ = 0;
  std::string login_mechanism_;
  Authenticator authenticator_;  // auth.mode and upstream.login.mode
  std::string locked_user_;      // auth.exclusive_sessions
  // What the auth hook decided for this login (auth.mode http).
  std::optional<config::Upstream> upstream_override_;
  std::optional<std::string> mailbox_override_;
  config::Duration hook_wait_{0};

  // TRANSACTION
  std::shared_ptr<MailStore> store_;
  std::size_t hidden_ = 0;  // messages on_delete: hide left out of this maildrop
  std::size_t mapped_ = 0;  // messages whose UIDL came from upstream.uidl_map
  std::optional<UidlMapCache::Entry> cached_uidl_map_;  // found at open, used at the snapshot
  Maildrop maildrop_;
  Transfer transfer_ = Transfer::kNone;
  std::uint32_t transfer_number_ = 0;
  std::uint32_t last_retrieved_ = 0;  // the POP3 number of the last whole RETR
  ReadAhead read_ahead_;
  protocol::DotStuffer stuffer_;
  // TOP: the filter that cuts the message; RETR with oe-ns-eoh: whether the header ended.
  std::optional<protocol::TopFilter> top_filter_;
  std::uint32_t transfer_uid_ = 0;
  std::uint64_t transfer_listed_size_ = 0;
  bool transfer_started_ = false;  // "+OK" sent: failure must now drop the client
  // LIST or UIDL of the whole maildrop, written as the client takes it: the listing of a
  // mailbox of 100,000 messages is megabytes, and is queued within the write watermarks.
  struct Listing {
    bool uidl = false;
    std::size_t next = 0;  // index into maildrop_.messages()
  };
  std::optional<Listing> listing_;
  // For the session_end line (Dovecot's pop3_logout_format): what the client took.
  struct Tally {
    bool logged_in = false;
    std::uint64_t retrieved = 0;
    std::uint64_t retrieved_octets = 0;
    std::uint64_t topped = 0;
    std::uint64_t topped_octets = 0;
    std::uint64_t deleted = 0;  // removed (or moved, hidden) upstream at QUIT
  } tally_;
  // UPDATE
  std::size_t update_count_ = 0;
  bool client_gone_ = false;  // the client left after QUIT; the UPDATE goes on
  std::string out_;           // reused scratch for multi-line replies (CAPA)
  bool finished_ = false;
  // Metrics: timings and the byte counts already added to the counters.
  std::optional<protocol::Pop3Verb> timed_command_;
  std::uint64_t command_started_ns_ = 0;
  std::uint64_t tls_started_ns_ = 0;
  std::uint64_t counted_client_in_ = 0;
  std::uint64_t counted_client_out_ = 0;
  std::uint64_t counted_upstream_in_ = 0;
  std::uint64_t counted_upstream_out_ = 0;
};

}  // namespace popbridge::proxy
