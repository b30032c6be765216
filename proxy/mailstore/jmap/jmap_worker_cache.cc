// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/jmap/jmap_worker_cache.h"

#include <openssl/rand.h>

#include <cstdint>
#include <iterator>
#include <string>
#include <utility>

#include "protocol/common/digest.h"
#include "protocol/common/secret.h"

namespace popbridge::proxy {

JmapWorkerCache::JmapWorkerCache(uv_loop_t* loop, HttpProxy proxy, Clock::duration known_for)
    : loop_(loop), proxy_(std::move(proxy)), known_for_(known_for), hash_key_(32, '\0') {
  if (RAND_bytes(reinterpret_cast<std::uint8_t*>(hash_key_.data()), hash_key_.size()) != 1) {
    hash_key_.clear();  // key_for() then keys nothing: every open starts afresh
  }
}

JmapWorkerCache::~JmapWorkerCache() { protocol::wipe(hash_key_.data(), hash_key_.size()); }

HttpClient& JmapWorkerCache::client(SSL_CTX* tls_context, std::size_t max_response_body_bytes) {
  std::unique_ptr<HttpClient>& client = clients_[tls_context];
  if (!client) {
    HttpClientOptions options;
    options.tls_context = tls_context;
    options.max_response_body_bytes = max_response_body_bytes;
    options.max_idle_connections = kMaxIdleConnections;
    options.idle_timeout = kIdleTimeout;
    options.proxy = proxy_;
    client = std::make_unique<HttpClient>(loop_, std::move(options));
  }
  return *client;
}

std::optional<std::string> JmapWorkerCache::key_for(std::string_view url, std::string_view mailbox,
                                                    const protocol::Secret& authorization) const {
  // With nothing remembered a key would only cost an HMAC and a lookup in an empty map.
  if (hash_key_.empty() || known_for_ <= Clock::duration::zero()) {
    return std::nullopt;
  }
  // Each field after its length, so that no two (url, mailbox) pairs run together alike.
  std::string material;
  material.reserve(url.size() + mailbox.size() + authorization.size() + 42);
  for (const std::string_view field : {url, mailbox}) {
    material.append(std::to_string(field.size())).append(1, ':').append(field);
  }
  material.append(authorization.view());
  std::string key = protocol::hmac_sha256_hex(hash_key_, material);
  protocol::wipe(material.data(), material.size());
  return key;
}

const JmapKnownMailbox* JmapWorkerCache::recall(const std::string& key, Clock::time_point now) {
  const auto found = by_key_.find(key);
  if (found == by_key_.end()) {
    return nullptr;
  }
  if (now - found->second->found >= known_for_) {
    forget(key);
    return nullptr;
  }
  return &found->second->known;
}

void JmapWorkerCache::remember(const std::string& key, JmapKnownMailbox known,
                               Clock::time_point now) {
  forget(key);
  if (known_for_ <= Clock::duration::zero()) {
    return;
  }
  known_.push_back({key, std::move(known), now});
  by_key_[key] = std::prev(known_.end());
  while (known_.size() > kMaxKnown) {
    by_key_.erase(known_.front().key);
    known_.pop_front();
  }
}

void JmapWorkerCache::forget(const std::string& key) {
  const auto found = by_key_.find(key);
  if (found != by_key_.end()) {
    known_.erase(found->second);
    by_key_.erase(found);
  }
}

}  // namespace popbridge::proxy
