// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <openssl/ssl.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/base/upstream_credentials.h"

namespace popbridge::proxy {

// What a mail store answered, in one vocabulary for every backend. The POP3 session maps
// it to response codes in one table (pop3_session.cc) and never sees IMAP or HTTP.
enum class StoreStatus : std::uint8_t {
  kOk,
  kRejected,   // the credentials were refused
  kInUse,      // the mailbox is locked by another session
  kTemporary,  // a failure that retrying later may cure
  kPermanent,  // a failure retrying will not cure (no such mailbox, a missing capability)
  kMissing,    // the message is gone (another client expunged it)
  kLost,       // the connection broke, timed out or could not be made
  kCount
};
std::string_view name(StoreStatus status);

struct StoreResult {
  StoreStatus status = StoreStatus::kLost;
  std::string detail;  // for logs: what the store said or why it failed
  bool ok() const { return status == StoreStatus::kOk; }
};

// One message of the snapshot, in the store's order of identity (ascending UID).
struct StoreMessage {
  std::uint32_t uid = 0;
  std::uint64_t size = 0;  // exact octets with CRLF line ends, as POP3 lists them
};

// The mailbox as it was at login; POP3 message numbers are fixed from it (RFC 1939).
struct StoreSnapshot {
  std::uint32_t uidvalidity = 0;
  std::vector<StoreMessage> messages;
  std::vector<std::string> guids;  // one per message when asked for, else empty
  // One per message when asked for, else empty: its X-UIDL header, nullopt without one.
  std::vector<std::optional<std::string>> xuidls;
  // One per message from a store whose messages carry their own UIDL (JMAP: the Email
  // id), else empty; upstream.uidl_format is then not used.
  std::vector<std::string> uidls;
  std::size_t restored = 0;  // messages an unfinished commit had marked, restored
  std::size_t hidden = 0;    // left out: deleted earlier with on_delete: hide
  // OpenRequest::want_uidl_map: the map's text stored with the mailbox (absent: none, or
  // the store cannot keep one; uidl_map_problem says why when it is a problem).
  std::optional<std::string> uidl_map;
  std::string uidl_map_problem;
  bool uidl_map_read = false;  // asked the store (false: the caller's copy still holds)
};

// Whom a store opens the mailbox for.
struct OpenRequest {
  UpstreamCredentials credentials;
  std::string client_address;  // for the upstream's logs (IMAP ID)
  std::uint16_t client_port = 0;
  std::string session_id;
  std::optional<std::string> mailbox;  // instead of the configured one (auth hook)
  bool want_guids = false;             // the UIDL format needs each message's GUID
  bool want_xuidls = false;            // upstream.reuse_xuidl: each message's X-UIDL
  bool want_uidl_map = false;          // upstream.uidl_map.store: metadata: the stored map
  // The caller already holds the map read for this UIDVALIDITY: no need to read it again.
  std::optional<std::uint32_t> uidl_map_known_for;
};

// Receives one message's octets from fetch().
class MessageSink {
 public:
  virtual ~MessageSink() = default;
  // Before the first octet. whole_size: the size of what follows when the store knows it
  // (a whole message); absent for a TOP, which arrives in parts.
  virtual void on_message_begin(std::optional<std::uint64_t> whole_size) = 0;
  // Octets in order, split anywhere. Returns false once the sink has what it needs (TOP):
  // the store then asks for nothing more.
  virtual bool on_message_data(std::string_view chunk) = 0;
};

// Receives the messages of one fetch_batch(), each from begin to end, one at a time, in
// any order; a message may be missing.
class BatchSink {
 public:
  virtual ~BatchSink() = default;
  virtual void on_batch_message_begin(std::uint32_t uid, std::uint64_t size) = 0;
  virtual void on_batch_message_data(std::string_view chunk) = 0;
  // whole: every octet arrived, as many as the snapshot listed. Nothing is whole unless
  // fetch_batch() then completes ok.
  virtual void on_batch_message_end(bool whole) = 0;
};

// A message for fetch_batch(): its UID and the size the snapshot listed.
struct BatchItem {
  std::uint32_t uid = 0;
  std::uint64_t listed_size = 0;
};

enum class FetchPart : std::uint8_t {
  kWhole,  // RETR
  kTop,    // TOP: the header, then the body until the sink says enough
};

// A user's mailbox behind one upstream connection; one per POP3 session, on its loop.
// Every operation completes exactly once, unless close() came first: after close() no
// completion and no observer call arrive. Completions may run inside the store's own
// callbacks, so the owner retires a store through a deferred delete, never in one.
//
// The data-integrity rules hold for every backend:
//  - fetch() completes ok only after every octet was delivered and the store confirmed
//    the message whole; a failure after on_message_begin means the message is incomplete.
//  - commit() removes only the given messages and completes ok only when the store
//    confirmed every one; a failed or interrupted commit leaves nothing that a later
//    expunge by anyone could turn into a deletion (the next open() restores it).
class MailStore {
 public:
  using Done = std::function<void(const StoreResult&)>;
  using Opened = std::function<void(const StoreResult&, StoreSnapshot)>;

  class Observer {
   public:
    virtual ~Observer() = default;
    // The connection failed while no operation was in progress.
    virtual void on_store_lost(const StoreResult& why) = 0;
  };

  virtual ~MailStore() = default;

  // Connects, logs in, opens the mailbox and reads the snapshot.
  virtual void open(OpenRequest request, Opened done) = 0;
  // listed_size: the size the snapshot gave. A whole message whose size turns out to
  // differ is not handed to the sink until the store found out why: gone (kMissing; a
  // server may serve a placeholder for a message another client expunged) or really of
  // another size (served as it is).
  virtual void fetch(std::uint32_t uid, std::uint64_t listed_size, FetchPart part,
                     MessageSink& sink, Done done) = 0;
  // Several whole messages in one exchange with the upstream (IMAP: one UID FETCH, one
  // round trip), without setting \Seen: for read-ahead. A store that cannot says so in
  // fetches_in_batches(), and its fetch_batch() completes kPermanent without a message.
  virtual bool fetches_in_batches() const { return false; }
  virtual void fetch_batch(std::vector<BatchItem> items, BatchSink& sink, Done done) {
    (void)items, (void)sink;
    done({StoreStatus::kPermanent, "this mail store fetches one message at a time"});
  }
  // Keeps the upstream session alive (POP3 NOOP).
  virtual void keep_alive(Done done) = 0;
  // The UPDATE state: removes these messages.
  virtual void commit(std::vector<std::uint32_t> deleted, Done done) = 0;
  // Backpressure: stop and resume reading from the upstream while the client is slow.
  virtual void pause_reading() = 0;
  virtual void resume_reading() = 0;
  // Keeps a UIDL map's text with the mailbox (upstream.uidl_map.store: metadata), where
  // the store can; kPermanent when it cannot.
  virtual void save_uidl_map(std::string text, Done done) {
    (void)text;
    done({StoreStatus::kPermanent, "this mail store cannot keep a UIDL map"});
  }
  // Ends the upstream session; graceful says goodbye first. No upcall after this.
  virtual void close(bool graceful) = 0;

  virtual bool usable() const = 0;
  // Whether the upstream accepts this login mechanism, once open() has reached it
  // (empty before): a client's own XOAUTH2/OAUTHBEARER token is offered only then.
  virtual std::optional<bool> accepts(UpstreamCredentials::Mechanism mechanism) const = 0;
  virtual std::uint64_t bytes_received() const = 0;
  virtual std::uint64_t bytes_sent() const = 0;
  virtual std::string tls_summary() const = 0;
};

struct HttpProxy;

// What a worker keeps of its upstream between sessions: logged-in IMAP connections
// (upstream.login_reuse), or JMAP's HTTP connections and where each user's mailbox was
// (always; a recalled JMAP open is checked, and every request authenticates). What it
// holds is the backend's business; sessions only hand it to make_mail_store.
class LoginPool {
 public:
  virtual ~LoginPool() = default;
};
// One for a worker loop and these upstream settings; null when they keep nothing. HTTP
// upstreams reach the server through egress_proxy.
std::shared_ptr<LoginPool> make_login_pool(uv_loop_t* loop, const config::Upstream& settings,
                                           metrics::Metrics& metrics,
                                           const HttpProxy& egress_proxy);

// The store upstream.protocol names, for the given upstream settings (the configured
// upstream, or a route an auth hook chose). settings and tls_context outlive the store;
// logins (may be null) outlives it too.
std::shared_ptr<MailStore> make_mail_store(uv_loop_t* loop, const config::Upstream& settings,
                                           SSL_CTX* tls_context, metrics::Metrics& metrics,
                                           MailStore::Observer& observer, LoginPool* logins);
// How sessions get their store: make_mail_store, or a test's fake.
using MailStoreFactory = std::function<std::shared_ptr<MailStore>(
    uv_loop_t* loop, const config::Upstream& settings, SSL_CTX* tls_context,
    metrics::Metrics& metrics, MailStore::Observer& observer, LoginPool* logins)>;

}  // namespace popbridge::proxy
