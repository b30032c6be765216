// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <openssl/ssl.h>

#include <string>
#include <string_view>

namespace popbridge::proxy {

// Where a TLS engine reads ciphertext from and writes it to, instead of memory BIOs.
// BoringSSL's memory BIO moves its whole remaining contents down on every read, and it
// reads twice per record (header, then body): 64 KiB of 4 KiB records cost a megabyte of
// memmove. It also needs a copy in and a copy out. This transport reads straight from the
// bytes libuv just read and appends records straight to the connection's output queue.
struct TlsTransport {
  // What the engine may consume now; empty means "would block". Set only for the length
  // of one call into the engine: it points into a buffer that is reused afterwards.
  std::string_view ciphertext_in;
  // Sealed records are appended here.
  std::string* ciphertext_out = nullptr;
};

// Gives ssl one BIO over transport, which must outlive the SSL. False if out of memory.
bool attach_tls_transport(SSL* ssl, TlsTransport* transport);

}  // namespace popbridge::proxy
