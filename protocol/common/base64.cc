#include "protocol/common/base64.h"

#include <openssl/base64.h>

#include <cstdint>

#include "protocol/common/secret.h"

namespace popbridge::protocol {

namespace {

const std::uint8_t* bytes_of(std::string_view text) {
  return reinterpret_cast<const std::uint8_t*>(text.data());
}

}  // namespace

std::string base64_encode(std::string_view data) {
  std::size_t encoded_size = 0;
  if (EVP_EncodedLength(&encoded_size, data.size()) == 0) {
    return {};
  }
  std::string out(encoded_size, '\0');  // includes the NUL EVP_EncodeBlock writes
  const std::size_t written =
      EVP_EncodeBlock(reinterpret_cast<std::uint8_t*>(out.data()), bytes_of(data), data.size());
  out.resize(written);
  return out;
}

// EVP_DecodeBase64 is already strict: it takes no whitespace and no characters outside
// the alphabet, requires whole quads, and takes '=' only as padding of the final quad.
// Non-zero pad bits ("QR==") are accepted, as by most decoders.
std::optional<std::string> base64_decode(std::string_view text) {
  if (text.empty()) {
    return std::string();
  }
  std::size_t max_size = 0;
  if (text.size() % 4 != 0 || EVP_DecodedLength(&max_size, text.size()) == 0) {
    return std::nullopt;
  }
  std::string out(max_size, '\0');
  std::size_t decoded = 0;
  if (EVP_DecodeBase64(reinterpret_cast<std::uint8_t*>(out.data()), &decoded, out.size(),
                       bytes_of(text), text.size()) == 0) {
    // A partial result may already hold part of a credential.
    wipe(out.data(), out.size());
    return std::nullopt;
  }
  out.resize(decoded);
  return out;
}

}  // namespace popbridge::protocol
