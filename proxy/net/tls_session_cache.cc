// SPDX-License-Identifier: Apache-2.0
#include "proxy/net/tls_session_cache.h"

namespace popbridge::proxy {
namespace {

// The cache is the context's to free: SSL_CTX_free runs this.
void free_cache(void*, void* cache, CRYPTO_EX_DATA*, int, long, void*) {
  std::unique_ptr<TlsSessionCache> owned(static_cast<TlsSessionCache*>(cache));
}

int context_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_cache);
  return index;
}

// The connection's cache key (a const std::string* the connection owns).
int key_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

bool single_use(const SSL_SESSION* session) {
  return SSL_SESSION_get_protocol_version(session) >= TLS1_3_VERSION;
}

}  // namespace

void TlsSessionCache::install(SSL_CTX* context) {
  auto cache = std::make_unique<TlsSessionCache>();
  if (SSL_CTX_set_ex_data(context, context_index(), cache.get()) != 1) {
    return;  // no cache: every handshake is a full one, as before
  }
  cache.release();  // owned by the context now (free_cache)
  // The library's own store is for servers; a client's sessions come to on_new_session.
  SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(context, on_new_session);
}

TlsSessionCache* TlsSessionCache::of(const SSL_CTX* context) {
  return static_cast<TlsSessionCache*>(SSL_CTX_get_ex_data(context, context_index()));
}

void TlsSessionCache::prepare(SSL* ssl, const std::string* key) {
  TlsSessionCache* cache = of(SSL_get_SSL_CTX(ssl));
  if (cache == nullptr || key == nullptr ||
      SSL_set_ex_data(ssl, key_index(), const_cast<std::string*>(key)) != 1) {
    return;
  }
  if (SslSessionPtr session = cache->take(*key)) {
    SSL_set_session(ssl, session.get());  // takes its own reference
  }
}

int TlsSessionCache::on_new_session(SSL* ssl, SSL_SESSION* session) {
  const auto* key = static_cast<const std::string*>(SSL_get_ex_data(ssl, key_index()));
  TlsSessionCache* cache = of(SSL_get_SSL_CTX(ssl));
  if (key == nullptr || cache == nullptr || SSL_SESSION_is_resumable(session) != 1) {
    return 0;  // not kept: the library drops its reference
  }
  cache->save(*key, SslSessionPtr(session));
  return 1;  // the reference is ours now
}

void TlsSessionCache::save(const std::string& key, SslSessionPtr session) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = sessions_.find(key);
  if (found == sessions_.end()) {
    if (sessions_.size() >= kServers) {
      sessions_.erase(sessions_.begin());  // bounded; any server will do
    }
    found = sessions_.emplace(key, std::deque<SslSessionPtr>()).first;
  }
  std::deque<SslSessionPtr>& kept = found->second;
  kept.push_back(std::move(session));
  if (kept.size() > kPerServer) {
    kept.pop_front();  // the oldest is the closest to expiring
  }
}

SslSessionPtr TlsSessionCache::take(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = sessions_.find(key);
  if (found == sessions_.end() || found->second.empty()) {
    return nullptr;
  }
  std::deque<SslSessionPtr>& kept = found->second;
  if (single_use(kept.back().get())) {
    SslSessionPtr newest = std::move(kept.back());
    kept.pop_back();
    return newest;
  }
  SSL_SESSION_up_ref(kept.back().get());  // a TLS 1.2 session serves every connection
  return SslSessionPtr(kept.back().get());
}

}  // namespace popbridge::proxy
