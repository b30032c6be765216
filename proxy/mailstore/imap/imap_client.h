// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "protocol/common/secret.h"
#include "protocol/imap/capability_list.h"
#include "protocol/imap/imap_parser.h"
#include "protocol/imap/imap_writer.h"
#include "proxy/base/upstream_credentials.h"
#include "proxy/base/uv_handle.h"
#include "proxy/net/connection.h"
#include "proxy/net/resolver.h"

namespace popbridge::proxy {

// What the upstream said to one command, or why it could not say it.
struct ImapResult {
  enum class Kind { kOk, kNo, kBad, kFailed };
  enum class Failure { kNone, kConnect, kTls, kTimeout, kProtocol, kBye, kClosed, kRefused };
  Kind kind = Kind::kFailed;
  Failure failure = Failure::kNone;
  std::string code;  // response code without brackets, e.g. "AUTHENTICATIONFAILED"
  std::string text;

  bool ok() const { return kind == Kind::kOk; }
  // The first atom of the code, upper-cased ("UNAVAILABLE" for "[UNAVAILABLE] ...").
  std::string code_atom() const;
};

std::string_view failure_name(ImapResult::Failure failure);

// Receives FETCH data of the command in flight (see protocol::ImapEvents).
class FetchSink {
 public:
  virtual ~FetchSink() = default;
  virtual void on_fetch_begin(std::uint32_t sequence) { (void)sequence; }
  virtual void on_fetch_uid(std::uint32_t uid) { (void)uid; }
  virtual void on_fetch_size(std::uint64_t size) { (void)size; }
  virtual void on_fetch_flags(std::string_view flags) { (void)flags; }
  virtual void on_fetch_guid(std::string_view guid) { (void)guid; }
  virtual void on_body_begin(std::string_view section, std::uint64_t origin, std::uint64_t size) {
    (void)section, (void)origin, (void)size;
  }
  virtual void on_body_data(std::string_view chunk) { (void)chunk; }
  virtual void on_body_end() {}
  virtual void on_fetch_end() {}
  // GETMETADATA's answer (RFC 5464).
  virtual void on_metadata(std::string_view entry, std::optional<std::string_view> value) {
    (void)entry, (void)value;
  }
};

// One upstream IMAP connection: connect (plain, STARTTLS or implicit TLS with the
// certificate and host name verified), greeting, capabilities, login, then a tagged
// command queue. A command waits for the one before it unless it is pipelined (RFC 3501
// §5.5) and upstream.pipelining is on; answers come back in order, and untagged FETCH data
// goes to the FetchSink of the oldest command in flight. Only what CAPABILITY offers is used.
//
// Re-entrancy: completions and observer calls run inside the parser's feed(), so they must
// not destroy the client; owners hand it to Server::dispose() instead, which deletes it on
// a later loop turn. shutdown() stops all upcalls at once.
class ImapClient final : Connection::Handler, protocol::ImapEvents {
 public:
  using Completion = std::function<void(const ImapResult&)>;

  class Observer {
   public:
    virtual ~Observer() = default;
    // The connection broke, timed out or was closed by BYE while no command was in
    // flight (a command in flight gets a kFailed result instead).
    virtual void on_upstream_lost(const ImapResult& why) = 0;
    // "* n EXPUNGE": message number n of the selected mailbox is gone (another client).
    virtual void on_expunged(std::uint32_t sequence) { (void)sequence; }
  };

  ImapClient(uv_loop_t* loop, const config::Upstream& settings, SSL_CTX* tls_context,
             Observer& observer);
  ~ImapClient() override;
  ImapClient(const ImapClient&) = delete;
  ImapClient& operator=(const ImapClient&) = delete;

  // Connects and reads capabilities (after STARTTLS when configured); ok() when ready for
  // login. The whole step is bounded by connect_timeout.
  void connect(Completion ready);
  // Who the session serves, for the IMAP ID command (RFC 2971) sent before login when the
  // server offers ID and upstream.send_id is on: the upstream's logs and brute-force
  // protection then see the real client.
  void set_client_identity(std::string address, std::uint16_t port, std::string session_id);
  // Passwords: AUTHENTICATE PLAIN (one round trip with SASL-IR) when offered, else LOGIN;
  // a master login (authzid set) needs AUTH=PLAIN. Tokens: AUTHENTICATE XOAUTH2 or
  // OAUTHBEARER, which the server must offer.
  void login(const UpstreamCredentials& credentials, Completion done);
  // Sends a command once those queued before it have completed; sink may be null.
  void run(const protocol::ImapCommand& command, FetchSink* sink, Completion done);
  // Sends a command right behind those in flight, without waiting for their answers, when
  // upstream.pipelining is on (else as run()). For a command that is read the same way
  // whatever the ones before it answer (SELECT behind a CAPABILITY, the snapshot FETCH
  // behind SELECT): a round trip saved.
  void pipeline(const protocol::ImapCommand& command, FetchSink* sink, Completion done);
  // LOGOUT, then close once it is sent; no completion or observer call after this.
  void logout();
  // Closes at once; no completion or observer call after this.
  void shutdown();

  bool usable() const { return state_ == State::kReady || state_ == State::kLoggingIn; }
  // Logged in, nothing queued or in flight, nothing awaited: the connection could serve
  // another session of the same user (upstream.login_reuse).
  bool idle() const {
    return state_ == State::kReady && queue_.empty() && in_flight_ == 0 && !capabilities_pending_ &&
           !saw_bye_;
  }
  // When the login succeeded, in the loop's milliseconds (uv_now).
  std::uint64_t logged_in_at_ms() const { return logged_in_at_ms_; }
  // Hands the upcalls to another owner (a parked connection, the session reusing it).
  void set_observer(Observer& observer) { observer_ = &observer; }
  // Before a reused connection SELECTs again: nothing of the last mailbox carries over.
  void forget_mailbox() {
    uidvalidity_.reset();
    permanent_flags_.reset();
    exists_ = 0;
  }
  bool has_capability(std::string_view name) const;
  // A login answer that carried no capabilities had CAPABILITY pipelined behind it, and
  // its answer is still due: has_capability() says false to everything until then.
  bool capabilities_pending() const { return capabilities_pending_; }
  // After SELECT: the mailbox keeps this keyword (PERMANENTFLAGS lists it or "\*").
  bool may_store_keyword(std::string_view keyword) const;
  std::optional<std::uint32_t> uidvalidity() const { return uidvalidity_; }
  std::uint32_t exists() const { return exists_; }
  std::string tls_summary() const { return connection_ ? connection_->tls_summary() : "none"; }

  // Backpressure from the client side: stop reading the upstream while the client is slow.
  void pause_reading();
  void resume_reading();
  std::uint64_t bytes_received() const;
  std::uint64_t bytes_sent() const;

 private:
  enum class State {
    kIdle,
    kResolving,
    kConnecting,
    kGreeting,
    kStartTls,
    kTlsHandshake,
    kCapability,
    kLoggingIn,
    kReady,
    kClosed
  };
  struct Pending {
    std::string tag;
    std::vector<std::string> parts;  // each after a continuation request
    std::size_t next_part = 0;
    bool secret = false;  // parts hold credentials: wipe after use
    // Sent to a challenge after the last part: "*" cancels; the token mechanisms answer an
    // error challenge with an empty response (XOAUTH2) or AQ== (RFC 7628) to get the real NO.
    std::string final_response = "*";
    FetchSink* sink = nullptr;
    Completion done;
    bool pipelined = false;  // may go out while the commands before it are in flight
    bool authenticating = false;
    // AUTHENTICATE and commands with synchronising literals: continuation requests are
    // theirs, so nothing is sent behind them until they complete.
    bool awaits_continuation() const { return parts.size() > 1 || authenticating; }
  };
  enum class Flight { kAfterPrevious, kPipelined };

  // Connection::Handler
  void on_connected(int status) override;
  void on_tls_established() override;
  void on_data(std::string_view bytes) override;
  void on_disconnected(std::string_view reason) override;
  // protocol::ImapEvents
  void on_status(const protocol::ImapStatus& status) override;
  void on_continuation(std::string_view text) override;
  void on_capability(const std::vector<std::string_view>& capabilities) override;
  void on_exists(std::uint32_t count) override;
  void on_expunge(std::uint32_t sequence) override;
  void on_fetch_begin(std::uint32_t sequence) override;
  void on_fetch_uid(std::uint32_t uid) override;
  void on_fetch_size(std::uint64_t size) override;
  void on_fetch_flags(std::string_view flags) override;
  void on_fetch_guid(std::string_view guid) override;
  void on_body_begin(std::string_view section, std::uint64_t origin, std::uint64_t size) override;
  void on_body_data(std::string_view chunk) override;
  void on_body_end() override;
  void on_fetch_end() override;
  void on_metadata(std::string_view entry, std::optional<std::string_view> value) override;

  void connect_next();
  void on_greeting(const protocol::ImapStatus& status);
  void after_tls_or_greeting();
  void request_capabilities();
  void connection_ready();
  void send_id();
  void ask_capabilities_after_login(const Completion& done, const ImapResult& logged_in);
  void authenticate(std::string_view mechanism, std::string_view message, Completion done);
  void send_command(const protocol::ImapCommand& command, FetchSink* sink, Completion done,
                    Flight flight);
  void send_parts(std::vector<std::string> parts, bool secret, FetchSink* sink, Completion done,
                  Flight flight = Flight::kAfterPrevious);
  bool may_send_now(const Pending& next) const;
  void send_next();
  void complete_current(const ImapResult& result);
  void fail(ImapResult::Failure failure, std::string reason);
  void set_capabilities(std::string_view space_separated);
  void arm_command_timer();
  std::string next_tag();
  FetchSink* sink() const;

  uv_loop_t* loop_;
  const config::Upstream& settings_;
  SSL_CTX* tls_context_;
  Observer* observer_;
  State state_ = State::kIdle;
  ConnectionPtr connection_;
  Resolver resolver_;
  std::vector<sockaddr_storage> addresses_;  // what the name resolved to, tried in order
  std::size_t next_address_ = 0;
  std::string last_connect_error_;
  protocol::ImapParser parser_;
  Timer timer_;
  Completion ready_;
  std::deque<Pending> queue_;  // the first in_flight_ entries are sent, oldest first
  std::size_t in_flight_ = 0;
  std::uint32_t tag_counter_ = 0;
  protocol::CapabilityList capabilities_;
  std::uint64_t capability_replies_ = 0;  // untagged CAPABILITY responses read
  bool capabilities_pending_ = false;
  std::optional<std::uint32_t> uidvalidity_;
  std::optional<std::string> permanent_flags_;  // upper-cased, from SELECT
  std::uint32_t exists_ = 0;
  std::uint64_t logged_in_at_ms_ = 0;
  bool paused_ = false;
  bool saw_bye_ = false;
  std::string bye_text_;
  std::string client_address_;
  std::uint16_t client_port_ = 0;
  std::string session_id_;
};

}  // namespace popbridge::proxy
