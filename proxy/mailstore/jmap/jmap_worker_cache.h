// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "protocol/common/secret.h"
#include "protocol/jmap/jmap.h"
#include "proxy/mailstore/mail_store.h"
#include "proxy/net/http_client.h"

namespace popbridge::proxy {

// Where a user's last successful open found their mailbox: enough for the next open to
// ask for the mailboxes and the first page in one request, skipping the session resource
// (and its redirect) and the separate Mailbox/get.
struct JmapKnownMailbox {
  std::string session_url;  // after redirects: relative URLs resolve against it
  protocol::jmap::Session session;
  std::string api_url;
  std::string mailbox_id;
};

// What a worker keeps for JMAP between POP3 sessions, so that a poll costs the server one
// request instead of a connection, a TLS handshake and three or four requests.
//
// Connections: kept alive from one session to the next. Nothing of a user stays on a kept
// connection (every request carries its own Authorization), so any session may take any.
// Requests go through the egress proxy (HTTPS_PROXY, NO_PROXY) as the OAuth2 token
// requests do.
//
// Known mailboxes: keyed by the URL, the mailbox name and a keyed hash of the
// Authorization value (the key random per cache, so the hash means nothing outside this
// process; no password or token is kept). Nothing here is trusted: every request still
// authenticates (a password changed upstream is refused at once), and the open that
// recalls an entry checks the mailbox's id in the same request, and opens afresh when the
// server no longer agrees.
//
// One per worker loop and configuration; the stores it serves must not outlive it.
class JmapWorkerCache final : public LoginPool {
 public:
  using Clock = std::chrono::steady_clock;

  // Idle connections kept over all origins, for long enough to meet a client polling
  // every few minutes; a server's shorter Keep-Alive timeout wins, and one that closes a
  // kept connection earlier without saying so is noticed (or its request sent again).
  static constexpr std::size_t kMaxIdleConnections = 16;
  static constexpr std::chrono::milliseconds kIdleTimeout{5 * 60'000};
  // Beyond this many users the oldest entry goes (a few hundred bytes each).
  static constexpr std::size_t kMaxKnown = 4096;

  // known_for: how long a known mailbox is recalled after the open that found it
  // (upstream.remember_session); zero remembers nothing.
  JmapWorkerCache(uv_loop_t* loop, HttpProxy proxy, Clock::duration known_for);
  ~JmapWorkerCache() override;
  JmapWorkerCache(const JmapWorkerCache&) = delete;
  JmapWorkerCache& operator=(const JmapWorkerCache&) = delete;

  // The client for this TLS context (one per configuration, so usually one client):
  // a connection is never reused under another context's verification settings.
  HttpClient& client(SSL_CTX* tls_context, std::size_t max_response_body_bytes);

  // nullopt when nothing is remembered: known_for is zero, or no random key could be had.
  std::optional<std::string> key_for(std::string_view url, std::string_view mailbox,
                                     const protocol::Secret& authorization) const;
  // The entry, if one is there and younger than known_for; valid until the next call.
  const JmapKnownMailbox* recall(const std::string& key, Clock::time_point now = Clock::now());
  void remember(const std::string& key, JmapKnownMailbox known,
                Clock::time_point now = Clock::now());
  void forget(const std::string& key);
  std::size_t known() const { return known_.size(); }

 private:
  struct Entry {
    std::string key;
    JmapKnownMailbox known;
    Clock::time_point found;
  };

  uv_loop_t* loop_;
  HttpProxy proxy_;
  Clock::duration known_for_;
  std::map<SSL_CTX*, std::unique_ptr<HttpClient>> clients_;
  std::string hash_key_;
  std::list<Entry> known_;  // oldest first
  std::unordered_map<std::string, std::list<Entry>::iterator> by_key_;
};

}  // namespace popbridge::proxy
