// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <cstddef>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/base/upstream_credentials.h"
#include "proxy/mailstore/imap/imap_client.h"
#include "proxy/mailstore/mail_store.h"

namespace popbridge::proxy {

// Whom a logged-in upstream connection serves, without the password: the login names and
// a keyed hash of the whole credential. The key is random per pool, so the hash means
// nothing outside this process.
struct LoginKey {
  std::string names;   // authzid, NUL, user
  std::string digest;  // HMAC-SHA-256, hex
};

// upstream.login_reuse: logged-in IMAP connections kept for a while after a POP3 session
// ends, so that the same user's next session (a client polling every few minutes) skips
// connect, TLS and login, which are most of what a poll costs the upstream. A connection
// is handed only to a session whose credentials hash the same (compared in constant
// time), and that session SELECTs again, so it sees the mailbox as it is now. One pool
// per worker loop and configuration, for the configured upstream only.
class ImapLoginPool final : public LoginPool {
 public:
  ImapLoginPool(uv_loop_t* loop, const config::Upstream& settings, metrics::Metrics& metrics);
  ~ImapLoginPool() override;  // logs out whatever is parked
  ImapLoginPool(const ImapLoginPool&) = delete;
  ImapLoginPool& operator=(const ImapLoginPool&) = delete;

  // The upstream its connections are logged in to.
  const config::Upstream& settings() const { return settings_; }
  // Passwords only: a token expires and is refreshed, so its hash says little.
  std::optional<LoginKey> key_for(const UpstreamCredentials& credentials) const;
  // The idle connection parked for exactly this key, or null.
  std::unique_ptr<ImapClient> take(const LoginKey& key);
  // Keeps an idle, logged-in connection for upstream.login_reuse.idle, and never beyond
  // login_reuse.max_age after its login. One per user: a newer one replaces it; beyond
  // login_reuse.max the oldest is logged out.
  void park(const LoginKey& key, std::unique_ptr<ImapClient> client);
  std::size_t size() const { return parked_.size(); }

 private:
  class Parked;
  using Position = std::list<std::unique_ptr<Parked>>::iterator;
  // Takes it out of the pool at once (no timer, no upcall after this; it logs out unless
  // its connection was taken) and deletes it on a later loop turn, since we may be inside
  // its callbacks. Once only: a second call does nothing.
  void remove(Parked& parked);

  uv_loop_t* loop_;
  const config::Upstream& settings_;
  metrics::Metrics& metrics_;
  std::string hash_key_;
  std::list<std::unique_ptr<Parked>> parked_;  // oldest first
  std::unordered_map<std::string, Position> by_names_;
};

}  // namespace popbridge::proxy
