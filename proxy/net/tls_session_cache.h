// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace popbridge::proxy {

struct SslSessionDeleter {
  void operator()(SSL_SESSION* session) const { SSL_SESSION_free(session); }
};
using SslSessionPtr = std::unique_ptr<SSL_SESSION, SslSessionDeleter>;

// TLS sessions the servers we connect to handed out (TLS 1.3 tickets, TLS 1.2 tickets or
// ids), so that the next connection to the same server resumes: the server skips its
// certificate signature, we skip verifying its chain. Every POP3 login opens an upstream
// connection, so a polling population would otherwise pay a full handshake each time on
// both sides. A resumed session was verified, for the same host name, when it was made.
//
// One cache per client SSL_CTX (it dies with the context, so a reload with another CA
// file starts empty); the workers share a context, so it is locked. Keyed by the host name
// verified and the server's address. TLS 1.3 tickets are used once (RFC 8446, C.4); a
// server sends new ones with every handshake, so a few are kept per server.
class TlsSessionCache {
 public:
  // Makes the context's client connections keep their sessions here.
  static void install(SSL_CTX* context);
  // Before a client handshake: resumes the session saved under key, if any, and saves
  // the sessions this connection receives under key. key must outlive ssl.
  static void prepare(SSL* ssl, const std::string* key);

  static constexpr std::size_t kPerServer = 4;
  static constexpr std::size_t kServers = 1024;

 private:
  static int on_new_session(SSL* ssl, SSL_SESSION* session);
  static TlsSessionCache* of(const SSL_CTX* context);

  void save(const std::string& key, SslSessionPtr session);
  SslSessionPtr take(const std::string& key);

  std::mutex mutex_;
  std::unordered_map<std::string, std::deque<SslSessionPtr>> sessions_;
};

}  // namespace popbridge::proxy
