// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace popbridge::bench {

// Counts (and optionally hashes) the octets of one retrieved message.
class Digest {
 public:
  explicit Digest(bool hashing);
  void add(std::string_view data) {
    octets_ += data.size();
    if (hashing_) {
      EVP_DigestUpdate(sha_.get(), data.data(), data.size());
    }
  }
  std::uint64_t octets() const { return octets_; }
  // Lowercase hex SHA-256 of everything added; empty when not hashing.
  std::string finish();

 private:
  bool hashing_;
  struct Free {
    void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
  };
  std::unique_ptr<EVP_MD_CTX, Free> sha_{EVP_MD_CTX_new()};
  std::uint64_t octets_ = 0;
};

}  // namespace popbridge::bench
