// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "config/config.h"

namespace popbridge::proxy {

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

struct TlsContextResult {
  SslCtxPtr context;
  std::string error;  // set when context is null
};

// The server side for POP3 clients: certificate chain and key from PEM files, TLS 1.2 or
// 1.3 minimum, no renegotiation (BoringSSL never renegotiates as a server).
TlsContextResult make_server_context(const config::TlsSettings& settings);

// The client side for the upstream: chain verification against ca_file (unless
// verification is off for tests); the host name is checked per connection. Sessions are
// kept for resumption (TlsSessionCache).
TlsContextResult make_client_context(const config::Upstream& upstream);
// The same from the two settings it uses, for other clients (the HTTP client).
TlsContextResult make_client_context(const std::string& ca_file, bool verify_certificate);

// notAfter of the context's certificate as a Unix time, for the expiry metric.
std::optional<std::int64_t> certificate_expiry(SSL_CTX* context);

// The last BoringSSL error queue entries as text, clearing the queue.
std::string take_tls_errors();

}  // namespace popbridge::proxy
