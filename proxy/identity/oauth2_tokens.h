// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "config/config.h"
#include "metrics/metrics.h"
#include "protocol/common/secret.h"
#include "proxy/base/uv_handle.h"
#include "proxy/identity/identity.h"
#include "proxy/net/http_client.h"

namespace popbridge::proxy {

// Access tokens for upstream.login.mode oauth2, shared by every worker: a token fetched
// by one loop serves sessions on all of them until shortly before it expires. A refresh
// token the endpoint rotates is kept here too (the file is only read at start/reload).
class TokenCache {
 public:
  using Clock = std::chrono::steady_clock;
  explicit TokenCache(std::function<Clock::time_point()> now = [] { return Clock::now(); })
      : now_(std::move(now)) {}

  // A token still good for a while, or an empty Secret.
  protocol::Secret find(const std::string& key);
  void store(const std::string& key, protocol::Secret token, std::chrono::seconds lifetime);
  // The upstream refused it: the next login asks the endpoint again.
  void forget(const std::string& key);
  // The newest refresh token the endpoint handed out for key, if any.
  protocol::Secret rotated_refresh_token(const std::string& key);
  void store_refresh_token(const std::string& key, protocol::Secret token);
  Clock::time_point now() const { return now_(); }
  // One fetch per key in the process, whichever worker asks first: true if the caller
  // may fetch (and must release()), false while another worker's fetch is in flight.
  bool claim(const std::string& key);
  void release(const std::string& key);

 private:
  struct Entry {
    protocol::Secret token;
    Clock::time_point refresh_after;
  };
  std::function<Clock::time_point()> now_;
  std::mutex mutex_;
  std::unordered_map<std::string, Entry> tokens_;
  std::unordered_map<std::string, protocol::Secret> refresh_tokens_;
  std::unordered_set<std::string> claimed_;
};

// Gets tokens from the token endpoint (RFC 6749 refresh_token or client_credentials
// grant) on one loop, asking once per user however many sessions wait for it. Never
// blocks the loop; the token is never logged.
class TokenSource {
 public:
  struct Result {
    enum class Kind { kOk, kTemporary, kPermanent };
    Kind kind = Kind::kTemporary;
    protocol::Secret token;
    std::string error;  // for logs: never contains a token
  };
  using Callback = std::function<void(const Result& result)>;

  TokenSource(uv_loop_t* loop, const config::OAuth2& settings, const Identity& identity,
              TokenCache& cache, const HttpProxy& proxy = {}, metrics::Metrics* metrics = nullptr);
  ~TokenSource();
  TokenSource(const TokenSource&) = delete;
  TokenSource& operator=(const TokenSource&) = delete;

  // done runs at once on a cached token, else once the endpoint answered; not at all if
  // alive has expired by then (the session is gone).
  void get(const std::string& user, std::weak_ptr<void> alive, Callback done);
  // The upstream refused the token it gave for user: do not hand it out again.
  void invalidate(const std::string& user);

 private:
  struct Waiter {
    std::weak_ptr<void> alive;
    Callback done;
  };
  void start(const std::string& key, const std::string& user);
  void fetch(const std::string& key, const std::string& user);
  void check_elsewhere();
  std::string key_for(const std::string& user) const;
  void finish(const std::string& key, const Result& result);

  const config::OAuth2& settings_;
  const Identity& identity_;
  TokenCache& cache_;
  HttpClient http_;
  metrics::Metrics* metrics_;  // null in tests
  std::unordered_map<std::string, std::vector<Waiter>> waiting_;
  std::unordered_map<std::string, HttpClient::RequestHandle> in_flight_;
  std::unordered_set<std::string> claimed_;  // keys this source holds the process's claim on
  // Keys (with a user to fetch for) another worker is fetching: polled until its token
  // is in the cache, or its claim is gone without one and this source fetches itself.
  std::unordered_map<std::string, std::string> elsewhere_;
  Timer poll_;
  std::vector<HttpClient::RequestHandle> finished_;
};

}  // namespace popbridge::proxy
