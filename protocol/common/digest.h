// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>
#include <string_view>

namespace popbridge::protocol {

// Lower-case hex digests through libcrypto's EVP interface, which BoringSSL and OpenSSL 3
// share (OpenSSL 3 deprecates the one-shot MD5() and SHA256()).
std::string md5_hex(std::string_view data);
std::string sha256_hex(std::string_view data);
// HMAC-SHA-256 of `data` under `key`, lower-case hex.
std::string hmac_sha256_hex(std::string_view key, std::string_view data);

}  // namespace popbridge::protocol
