// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "protocol/common/secret.h"

namespace popbridge::protocol {

// RFC 4616 PLAIN: authzid NUL authcid NUL passwd.
struct PlainCredentials {
  std::string authzid;  // empty when absent
  std::string authcid;
  Secret password;
};
// Parses a decoded PLAIN message; nullopt if malformed (wrong NUL count, empty authcid
// or password, NUL inside a field).
std::optional<PlainCredentials> parse_sasl_plain(std::string_view message);
// Builds the PLAIN message (not base64-encoded).
Secret build_sasl_plain(std::string_view authzid, std::string_view authcid,
                        std::string_view password);

// A client's SASL response line: "*" cancels, "=" is an empty response, else base64.
struct SaslResponse {
  enum class Kind { kData, kCancel, kInvalid } kind = Kind::kInvalid;
  Secret data;  // decoded, for kData
};
SaslResponse decode_sasl_response(std::string_view line);

}  // namespace popbridge::protocol

namespace popbridge::protocol {

// A bearer token sent by a client that already has one (XOAUTH2 as Google and Microsoft
// define it, or RFC 7628 OAUTHBEARER).
struct BearerCredentials {
  std::string user;
  Secret token;
};
// "user=" user ^A "auth=Bearer " token ^A ^A
std::optional<BearerCredentials> parse_xoauth2(std::string_view message);
// gs2 header "n,a=" user "," then ^A-separated key=value pairs with "auth=Bearer " token,
// ending in ^A ^A. A message without "a=" has an empty user.
std::optional<BearerCredentials> parse_oauthbearer(std::string_view message);

}  // namespace popbridge::protocol
