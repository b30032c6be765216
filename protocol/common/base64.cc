// SPDX-License-Identifier: Apache-2.0
#include "protocol/common/base64.h"

#include <openssl/evp.h>

#include <cstdint>

#include "protocol/common/secret.h"

namespace popbridge::protocol {

namespace {

const std::uint8_t* bytes_of(std::string_view text) {
  return reinterpret_cast<const std::uint8_t*>(text.data());
}

bool in_alphabet(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

// The strict form RFC 4648 section 3.3 asks of a SASL response: whole quads, only the
// alphabet, and '=' only as the padding of the final quad. Checked here, not left to
// EVP_DecodeBlock, which skips surrounding whitespace and differs between BoringSSL and
// OpenSSL in what else it tolerates. Non-zero pad bits ("QR==") are accepted, as by most
// decoders.
std::size_t strict_padding(std::string_view text, bool& valid) {
  valid = !text.empty() && text.size() % 4 == 0;
  std::size_t padding = 0;
  if (valid && text.back() == '=') {
    padding = text[text.size() - 2] == '=' ? 2 : 1;
  }
  for (std::size_t i = 0; valid && i < text.size() - padding; ++i) {
    valid = in_alphabet(text[i]);
  }
  return padding;
}

}  // namespace

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');  // with the NUL it writes
  // BoringSSL returns size_t, OpenSSL int; never negative.
  const auto written = EVP_EncodeBlock(reinterpret_cast<std::uint8_t*>(out.data()), bytes_of(data),
                                       static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(written));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.empty()) {
    return std::string();
  }
  bool valid = false;
  const std::size_t padding = strict_padding(text, valid);
  if (!valid) {
    return std::nullopt;
  }
  std::string out(text.size() / 4 * 3, '\0');
  // The decoded length counts the padding as zero bytes; those are dropped below.
  const int decoded = EVP_DecodeBlock(reinterpret_cast<std::uint8_t*>(out.data()), bytes_of(text),
                                      static_cast<int>(text.size()));
  if (decoded < 0 || static_cast<std::size_t>(decoded) != out.size()) {
    // A partial result may already hold part of a credential.
    wipe(out.data(), out.size());
    return std::nullopt;
  }
  out.resize(out.size() - padding);
  return out;
}

}  // namespace popbridge::protocol
