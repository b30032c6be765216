// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/digest.h"

#include <cstddef>

namespace popbridge::bench {
namespace {

std::string hex(const std::uint8_t* data, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 0xf];
  }
  return out;
}

}  // namespace

Digest::Digest(bool hashing) : hashing_(hashing) {
  EVP_DigestInit_ex(sha_.get(), EVP_sha256(), nullptr);
}

std::string Digest::finish() {
  if (!hashing_) {
    return {};
  }
  std::uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(sha_.get(), digest, &length);
  return hex(digest, length);
}

}  // namespace popbridge::bench
