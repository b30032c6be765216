// SPDX-License-Identifier: Apache-2.0
#include "protocol/sasl/sasl.h"

#include "protocol/common/base64.h"

namespace popbridge::protocol {

std::optional<PlainCredentials> parse_sasl_plain(std::string_view message) {
  const std::size_t first = message.find('\0');
  if (first == std::string_view::npos) {
    return std::nullopt;
  }
  const std::size_t second = message.find('\0', first + 1);
  if (second == std::string_view::npos ||
      message.find('\0', second + 1) != std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view authcid = message.substr(first + 1, second - first - 1);
  const std::string_view password = message.substr(second + 1);
  if (authcid.empty() || password.empty()) {
    return std::nullopt;
  }
  PlainCredentials credentials;
  credentials.authzid = message.substr(0, first);
  credentials.authcid = authcid;
  credentials.password = Secret(password);
  return credentials;
}

Secret build_sasl_plain(std::string_view authzid, std::string_view authcid,
                        std::string_view password) {
  std::string message;
  // Sized once, so no reallocation leaves a copy of the password behind.
  message.reserve(authzid.size() + authcid.size() + password.size() + 2);
  message.append(authzid);
  message.push_back('\0');
  message.append(authcid);
  message.push_back('\0');
  message.append(password);
  Secret result(message);
  wipe(message.data(), message.size());
  return result;
}

SaslResponse decode_sasl_response(std::string_view line) {
  SaslResponse response;
  if (line == "*") {
    response.kind = SaslResponse::Kind::kCancel;
    return response;
  }
  // RFC 5034 §4: "=" is how an initial response says "empty"; in the exchange itself an
  // empty line is the empty response (the grammar has *(CRLF [base64])), and base64_decode
  // of "" gives exactly that.
  if (line == "=") {
    response.kind = SaslResponse::Kind::kData;
    return response;
  }
  std::optional<std::string> decoded = base64_decode(line);
  if (!decoded) {
    return response;
  }
  response.kind = SaslResponse::Kind::kData;
  response.data = Secret(*decoded);
  wipe(decoded->data(), decoded->size());
  return response;
}

}  // namespace popbridge::protocol

namespace popbridge::protocol {
namespace {

// Splits the ^A-separated key=value list that both token mechanisms use and takes the
// bearer token; the list must end with an empty element (^A ^A).
std::optional<Secret> bearer_token(std::string_view pairs) {
  if (pairs.size() < 2 || pairs.substr(pairs.size() - 2) != "\x01\x01") {
    return std::nullopt;
  }
  pairs.remove_suffix(2);
  std::optional<Secret> token;
  while (!pairs.empty()) {
    const std::size_t end = pairs.find('\x01');
    const std::string_view pair = pairs.substr(0, end);
    constexpr std::string_view kAuth = "auth=";
    if (pair.substr(0, kAuth.size()) == kAuth) {
      std::string_view value = pair.substr(kAuth.size());
      constexpr std::string_view kBearer = "Bearer ";
      if (value.size() <= kBearer.size() || value.substr(0, kBearer.size()) != kBearer || token) {
        return std::nullopt;
      }
      token = Secret(value.substr(kBearer.size()));
    }
    if (end == std::string_view::npos) {
      break;
    }
    pairs.remove_prefix(end + 1);
  }
  return token;
}

}  // namespace

std::optional<BearerCredentials> parse_xoauth2(std::string_view message) {
  constexpr std::string_view kUser = "user=";
  if (message.substr(0, kUser.size()) != kUser) {
    return std::nullopt;
  }
  message.remove_prefix(kUser.size());
  const std::size_t end = message.find('\x01');
  if (end == 0 || end == std::string_view::npos) {
    return std::nullopt;
  }
  std::optional<Secret> token = bearer_token(message.substr(end + 1));
  if (!token) {
    return std::nullopt;
  }
  return BearerCredentials{std::string(message.substr(0, end)), std::move(*token)};
}

std::optional<BearerCredentials> parse_oauthbearer(std::string_view message) {
  // gs2-header: "n," or "y," or "p=...," then optional "a=user", then ",".
  if (message.size() < 3 || (message[0] != 'n' && message[0] != 'y') || message[1] != ',') {
    return std::nullopt;
  }
  message.remove_prefix(2);
  std::string user;
  if (message.substr(0, 2) == "a=") {
    const std::size_t comma = message.find(',');
    if (comma == std::string_view::npos) {
      return std::nullopt;
    }
    user = std::string(message.substr(2, comma - 2));
    message.remove_prefix(comma);
  }
  if (message.substr(0, 2) != ",\x01") {
    return std::nullopt;
  }
  message.remove_prefix(2);
  std::optional<Secret> token = bearer_token(message);
  if (!token) {
    return std::nullopt;
  }
  return BearerCredentials{std::move(user), std::move(*token)};
}

}  // namespace popbridge::protocol
