#include "protocol/sasl.h"

#include "protocol/base64.h"

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
