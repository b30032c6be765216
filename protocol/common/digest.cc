// SPDX-License-Identifier: Apache-2.0
#include "protocol/common/digest.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace popbridge::protocol {

namespace {

std::string hex(const unsigned char* bytes, unsigned int length) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 0x0f]);
  }
  return out;
}

std::string hex_digest(const EVP_MD* algorithm, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, algorithm, nullptr) != 1) {
    return {};  // only on allocation failure inside libcrypto
  }
  return hex(digest, length);
}

}  // namespace

std::string md5_hex(std::string_view data) { return hex_digest(EVP_md5(), data); }

std::string sha256_hex(std::string_view data) { return hex_digest(EVP_sha256(), data); }

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), key.data(), key.size(),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac,
           &length) == nullptr) {
    return {};
  }
  return hex(mac, length);
}

}  // namespace popbridge::protocol
