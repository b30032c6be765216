// SPDX-License-Identifier: Apache-2.0
#include "proxy/net/tls_context.h"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <ctime>

#include "proxy/net/tls_session_cache.h"

namespace popbridge::proxy {
namespace {

uint16_t protocol_version(config::TlsVersion version) {
  return version == config::TlsVersion::k1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

// An idle session should not hold two 16 KiB record buffers. OpenSSL keeps them unless
// asked; BoringSSL always releases them (the mode is defined there as a no-op).
void release_idle_buffers(SSL_CTX* context) { SSL_CTX_set_mode(context, SSL_MODE_RELEASE_BUFFERS); }

}  // namespace

std::string take_tls_errors() {
  std::string text;
  while (uint32_t code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    if (!text.empty()) {
      text += "; ";
    }
    text += buffer;
  }
  return text.empty() ? "unknown TLS error" : text;
}

std::optional<std::int64_t> certificate_expiry(SSL_CTX* context) {
  X509* certificate = SSL_CTX_get0_certificate(context);
  if (certificate == nullptr) {
    return std::nullopt;
  }
  // Debian's BoringSSL and OpenSSL 3.0 both lack ASN1_TIME_to_posix: measure from now.
  int days = 0;
  int seconds = 0;
  if (ASN1_TIME_diff(&days, &seconds, nullptr, X509_get0_notAfter(certificate)) != 1) {
    return std::nullopt;
  }
  return static_cast<std::int64_t>(std::time(nullptr)) + std::int64_t{days} * 86400 + seconds;
}

TlsContextResult make_server_context(const config::TlsSettings& settings) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) {
    return {nullptr, take_tls_errors()};
  }
  SSL_CTX_set_min_proto_version(ctx.get(), protocol_version(settings.min_version));
  release_idle_buffers(ctx.get());
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), settings.certificate.c_str()) != 1) {
    return {nullptr,
            "cannot load certificate '" + settings.certificate + "': " + take_tls_errors()};
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), settings.private_key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return {nullptr,
            "cannot load private key '" + settings.private_key + "': " + take_tls_errors()};
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    return {nullptr, "private key does not match the certificate: " + take_tls_errors()};
  }
  return {std::move(ctx), {}};
}

TlsContextResult make_client_context(const config::Upstream& upstream) {
  return make_client_context(upstream.ca_file, upstream.verify_certificate);
}

TlsContextResult make_client_context(const std::string& ca_file, bool verify_certificate) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) {
    return {nullptr, take_tls_errors()};
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  release_idle_buffers(ctx.get());
  if (verify_certificate) {
    if (SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) != 1) {
      return {nullptr, "cannot load CA file '" + ca_file + "': " + take_tls_errors()};
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  }
  TlsSessionCache::install(ctx.get());
  return {std::move(ctx), {}};
}

}  // namespace popbridge::proxy
