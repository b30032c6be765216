// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/imap/imap_login_pool.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "protocol/common/digest.h"
#include "protocol/common/secret.h"
#include "proxy/base/deferred_delete.h"
#include "proxy/base/log.h"
#include "proxy/base/uv_handle.h"

namespace popbridge::proxy {

// A parked connection: it receives the connection's upcalls while no session owns it,
// and leaves the pool when the upstream drops it or its time is up.
class ImapLoginPool::Parked final : public ImapClient::Observer {
 public:
  Parked(ImapLoginPool& pool, LoginKey key, std::unique_ptr<ImapClient> client)
      : pool_(pool), key_(std::move(key)), client_(std::move(client)), expiry_(pool.loop_) {
    client_->set_observer(*this);
    // A connection held back by a slow client's backpressure must see a BYE or close.
    client_->resume_reading();
  }
  Parked(const Parked&) = delete;
  Parked& operator=(const Parked&) = delete;

  void arm(Position position, std::uint64_t expires_in_ms) {
    position_ = position;
    expiry_.start(expires_in_ms, [this] { pool_.remove(*this); });
  }
  const LoginKey& key() const { return key_; }
  Position position() const { return position_; }
  ImapClient& client() { return *client_; }
  std::unique_ptr<ImapClient> release() {
    expiry_.stop();
    return std::move(client_);
  }
  // Out of the pool: no timer and no upcall any more (LOGOUT closes the client), though
  // the object lives on until a later loop turn.
  void detach() {
    detached_ = true;
    expiry_.stop();
    if (client_ && client_->usable()) {
      client_->logout();
    }
  }
  bool detached() const { return detached_; }

  // ImapClient::Observer
  void on_upstream_lost(const ImapResult& why) override {
    log::debug("parked_upstream_lost", {{"reason", why.text}});
    pool_.remove(*this);
  }
  void on_expunged(std::uint32_t) override {}  // the next session SELECTs afresh

 private:
  ImapLoginPool& pool_;
  LoginKey key_;
  std::unique_ptr<ImapClient> client_;
  Timer expiry_;
  Position position_;
  bool detached_ = false;
};

ImapLoginPool::ImapLoginPool(uv_loop_t* loop, const config::Upstream& settings,
                             metrics::Metrics& metrics)
    : loop_(loop), settings_(settings), metrics_(metrics), hash_key_(32, '\0') {
  if (RAND_bytes(reinterpret_cast<std::uint8_t*>(hash_key_.data()), hash_key_.size()) != 1) {
    hash_key_.clear();  // key_for() then keys nothing: no connection is kept
    log::error("login_reuse_disabled", {{"reason", "no random key for the credential hashes"}});
  }
}

ImapLoginPool::~ImapLoginPool() {
  metrics_.upstream_connections_parked.Decrement(static_cast<double>(parked_.size()));
  for (const std::unique_ptr<Parked>& parked : parked_) {
    parked->detach();  // logs out
  }
  parked_.clear();
  protocol::wipe(hash_key_.data(), hash_key_.size());
}

std::optional<LoginKey> ImapLoginPool::key_for(const UpstreamCredentials& credentials) const {
  if (credentials.mechanism != UpstreamCredentials::Mechanism::kPassword || hash_key_.empty()) {
    return std::nullopt;
  }
  LoginKey key;
  key.names = credentials.authzid;
  key.names += '\0';
  key.names += credentials.user;
  std::string material = key.names;
  material += '\0';
  material += credentials.secret.view();
  key.digest = protocol::hmac_sha256_hex(hash_key_, material);
  protocol::wipe(material.data(), material.size());
  if (key.digest.empty()) {
    return std::nullopt;  // never a key that every password would match
  }
  return key;
}

std::unique_ptr<ImapClient> ImapLoginPool::take(const LoginKey& key) {
  const auto found = by_names_.find(key.names);
  if (found == by_names_.end()) {
    return nullptr;
  }
  Parked& parked = **found->second;
  // Another password for the same user (changed, or mistyped) is never given this
  // connection; that session logs in itself.
  if (parked.key().digest.size() != key.digest.size() ||
      CRYPTO_memcmp(parked.key().digest.data(), key.digest.data(), key.digest.size()) != 0 ||
      !parked.client().idle()) {
    return nullptr;
  }
  std::unique_ptr<ImapClient> client = parked.release();
  remove(parked);
  metrics_.upstream_logins_reused.Increment();
  return client;
}

void ImapLoginPool::park(const LoginKey& key, std::unique_ptr<ImapClient> client) {
  const std::uint64_t now = uv_now(loop_);
  const auto max_age = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(settings_.login_reuse.max_age).count());
  const std::uint64_t age = now - std::min(now, client->logged_in_at_ms());
  if (age >= max_age) {
    // Logged in too long ago to be handed on again. We may be inside one of its
    // callbacks: it is deleted on a later loop turn.
    client->logout();
    DeferredDelete::of(loop_).retire(std::shared_ptr<ImapClient>(std::move(client)));
    return;
  }
  if (const auto found = by_names_.find(key.names); found != by_names_.end()) {
    remove(**found->second);
  }
  while (parked_.size() >= settings_.login_reuse.max) {
    remove(*parked_.front());
  }
  parked_.push_back(std::make_unique<Parked>(*this, key, std::move(client)));
  const Position position = std::prev(parked_.end());
  by_names_.emplace(key.names, position);
  const auto idle = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(settings_.login_reuse.idle).count());
  (*position)->arm(position, std::min(idle, max_age - age));
  metrics_.upstream_connections_parked.Increment();
}

void ImapLoginPool::remove(Parked& parked) {
  if (parked.detached()) {
    return;  // already out (its expiry and its connection's end may both come)
  }
  parked.detach();
  const Position position = parked.position();
  std::unique_ptr<Parked> owned = std::move(*position);
  by_names_.erase(owned->key().names);
  parked_.erase(position);
  metrics_.upstream_connections_parked.Decrement();
  DeferredDelete::of(loop_).retire(std::shared_ptr<Parked>(std::move(owned)));
}

}  // namespace popbridge::proxy
