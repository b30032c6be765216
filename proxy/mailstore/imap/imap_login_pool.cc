// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/imap/imap_login_pool.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

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
  ~Parked() override {
    if (client_) {
      client_->logout();
    }
  }
  Parked(const Parked&) = delete;
  Parked& operator=(const Parked&) = delete;

  void arm(Position position, std::chrono::milliseconds idle) {
    position_ = position;
    expiry_.start(static_cast<std::uint64_t>(idle.count()), [this] { pool_.remove(position_); });
  }
  const LoginKey& key() const { return key_; }
  ImapClient& client() { return *client_; }
  std::unique_ptr<ImapClient> release() {
    expiry_.stop();
    return std::move(client_);
  }

  // ImapClient::Observer
  void on_upstream_lost(const ImapResult& why) override {
    log::debug("parked_upstream_lost", {{"reason", why.text}});
    pool_.remove(position_);
  }
  void on_expunged(std::uint32_t) override {}  // the next session SELECTs afresh

 private:
  ImapLoginPool& pool_;
  LoginKey key_;
  std::unique_ptr<ImapClient> client_;
  Timer expiry_;
  Position position_;
};

ImapLoginPool::ImapLoginPool(uv_loop_t* loop, const config::Upstream& settings,
                             metrics::Metrics& metrics)
    : loop_(loop), settings_(settings), metrics_(metrics), hash_key_(32, '\0') {
  RAND_bytes(reinterpret_cast<std::uint8_t*>(hash_key_.data()), hash_key_.size());
}

ImapLoginPool::~ImapLoginPool() {
  metrics_.upstream_connections_parked.Decrement(static_cast<double>(parked_.size()));
  parked_.clear();  // each logs out
  protocol::wipe(hash_key_.data(), hash_key_.size());
}

std::optional<LoginKey> ImapLoginPool::key_for(const UpstreamCredentials& credentials) const {
  if (credentials.mechanism != UpstreamCredentials::Mechanism::kPassword) {
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
  remove(found->second);
  metrics_.upstream_logins_reused.Increment();
  return client;
}

void ImapLoginPool::park(const LoginKey& key, std::unique_ptr<ImapClient> client) {
  if (settings_.login_reuse.idle.count() <= 0 || settings_.login_reuse.max == 0) {
    client->logout();
    return;
  }
  if (const auto found = by_names_.find(key.names); found != by_names_.end()) {
    remove(found->second);
  }
  while (parked_.size() >= settings_.login_reuse.max) {
    remove(parked_.begin());
  }
  parked_.push_back(std::make_unique<Parked>(*this, key, std::move(client)));
  const Position position = std::prev(parked_.end());
  by_names_.emplace(key.names, position);
  (*position)->arm(
      position, std::chrono::duration_cast<std::chrono::milliseconds>(settings_.login_reuse.idle));
  metrics_.upstream_connections_parked.Increment();
}

void ImapLoginPool::remove(Position position) {
  std::unique_ptr<Parked> parked = std::move(*position);
  by_names_.erase(parked->key().names);
  parked_.erase(position);
  metrics_.upstream_connections_parked.Decrement();
  DeferredDelete::of(loop_).retire(std::shared_ptr<Parked>(std::move(parked)));
}

}  // namespace popbridge::proxy
