// SPDX-License-Identifier: Apache-2.0
#include "proxy/net/tls_transport.h"

#include <openssl/bio.h>

#include <algorithm>
#include <cstring>

namespace popbridge::proxy {
namespace {

TlsTransport* transport_of(BIO* bio) { return static_cast<TlsTransport*>(BIO_get_data(bio)); }

int read_ciphertext(BIO* bio, char* out, int length) {
  BIO_clear_retry_flags(bio);
  TlsTransport* transport = transport_of(bio);
  if (length <= 0) {
    return 0;
  }
  if (transport->ciphertext_in.empty()) {
    BIO_set_retry_read(bio);  // "wait for more", never end of stream
    return -1;
  }
  const std::size_t taken =
      std::min(static_cast<std::size_t>(length), transport->ciphertext_in.size());
  std::memcpy(out, transport->ciphertext_in.data(), taken);
  transport->ciphertext_in.remove_prefix(taken);
  return static_cast<int>(taken);
}

int write_ciphertext(BIO* bio, const char* data, int length) {
  BIO_clear_retry_flags(bio);
  if (length <= 0) {
    return 0;
  }
  transport_of(bio)->ciphertext_out->append(data, static_cast<std::size_t>(length));
  return length;
}

long control(BIO*, int command, long, void*) {
  // Both libraries flush the write side after each handshake flight; there is nothing to
  // flush, and anything but 1 would fail the handshake. Other queries get "no".
  return command == BIO_CTRL_FLUSH ? 1 : 0;
}

BIO_METHOD* transport_method() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* created =
        BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "popbridge TLS transport");
    if (created != nullptr) {
      BIO_meth_set_read(created, read_ciphertext);
      BIO_meth_set_write(created, write_ciphertext);
      BIO_meth_set_ctrl(created, control);
    }
    return created;
  }();
  return method;
}

}  // namespace

bool attach_tls_transport(SSL* ssl, TlsTransport* transport) {
  BIO_METHOD* method = transport_method();
  BIO* bio = method != nullptr ? BIO_new(method) : nullptr;
  if (bio == nullptr) {
    return false;
  }
  BIO_set_data(bio, transport);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl, bio, bio);  // one BIO both ways: the SSL takes the one reference
  return true;
}

}  // namespace popbridge::proxy
