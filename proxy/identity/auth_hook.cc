// SPDX-License-Identifier: Apache-2.0
#include "proxy/identity/auth_hook.h"

#include <algorithm>
#include <charconv>

#include "proxy/net/resolver.h"

namespace popbridge::proxy {
namespace {

// nginx escapes the user name and password it sends to an auth_http hook (space, '%',
// control and 8-bit octets as %XX), and hooks written for it unescape them.
std::string escape_for_hook(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string escaped;
  escaped.reserve(text.size());
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f || c == '%') {
      escaped.push_back('%');
      escaped.push_back(kHex[byte >> 4]);
      escaped.push_back(kHex[byte & 0xf]);
    } else {
      escaped.push_back(c);
    }
  }
  return escaped;
}

// An Auth-Status text as a reply text: printable ASCII only (no line break can forge a
// reply), at most 200 octets.
std::string printable_hook_text(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 200)) {
    if (c >= 0x20 && c <= 0x7e) {
      out.push_back(c);
    }
  }
  return out;
}

HookAnswer failed(std::string problem) {
  HookAnswer answer;
  answer.verdict = HookAnswer::Verdict::kFailed;
  answer.problem = std::move(problem);
  return answer;
}

// Points route at the server the answer names; false (and why) if the answer is unusable.
bool route_upstream(const HttpResult& response, const config::HttpAuth& settings,
                    const config::Upstream& upstream, config::Upstream& route,
                    std::string& problem) {
  route = upstream;
  if (auto server = response.header("Auth-Server")) {
    route.address.host = std::string(*server);
    // nginx's Auth-Server is an IP address, and backends behind one often share a
    // certificate: then the configured server_name is the name to check. A host name is
    // its own.
    sockaddr_storage ip{};
    if (!parse_ip_literal(config::Endpoint{route.address.host, 1}, ip)) {
      route.server_name = route.address.host;
    }
  }
  if (auto port = response.header("Auth-Port")) {
    std::uint16_t number = 0;
    const auto [end, error] = std::from_chars(port->data(), port->data() + port->size(), number);
    if (error != std::errc() || end != port->data() + port->size() || number == 0) {
      problem = "Auth-Port is not a port number";
      return false;
    }
    route.address.port = number;
  }
  if (auto name = response.header("X-Popbridge-Upstream-Server-Name")) {
    route.server_name = std::string(*name);
  }
  route.tls = settings.route_tls.value_or(upstream.tls);
  if (auto tls = response.header("X-Popbridge-Upstream-TLS")) {
    if (*tls == "none") {
      route.tls = config::TlsMode::kNone;
    } else if (*tls == "starttls") {
      route.tls = config::TlsMode::kStartTls;
    } else if (*tls == "implicit") {
      route.tls = config::TlsMode::kImplicit;
    } else {
      problem = "X-Popbridge-Upstream-TLS must be none, starttls or implicit";
      return false;
    }
  }
  return true;
}

}  // namespace

HttpRequest auth_hook_request(const config::HttpAuth& settings, const HookQuestion& question) {
  HttpRequest request;
  request.url = settings.url;
  request.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(settings.timeout);
  request.headers = {{"Auth-Method", "plain"},
                     {"Auth-User", escape_for_hook(question.user)},
                     {"Auth-Pass", escape_for_hook(question.password.view())},
                     {"Auth-Protocol", "pop3"},
                     {"Auth-Login-Attempt", std::to_string(question.attempt)},
                     {"Client-IP", question.client_address},
                     {"Client-Host", question.client_address},
                     {"Auth-SSL", question.tls ? "on" : "off"}};
  return request;
}

HookAnswer read_auth_hook_answer(const HttpResult& response, const config::HttpAuth& settings,
                                 const config::Upstream& upstream) {
  if (!response.ok()) {
    return failed(std::string(to_string(response.error)) + ": " + response.error_text);
  }
  if (response.status != 200) {
    return failed("HTTP " + std::to_string(response.status));
  }
  const std::optional<std::string_view> status = response.header("Auth-Status");
  if (!status) {
    return failed("no Auth-Status header");
  }
  HookAnswer answer;
  if (*status != "OK") {
    answer.verdict = HookAnswer::Verdict::kDeny;
    unsigned wait = 0;
    if (auto header = response.header("Auth-Wait")) {
      std::from_chars(header->data(), header->data() + header->size(), wait);
    }
    answer.wait = std::chrono::seconds(std::min(wait, 60u));
    // nginx hands the hook's text to the client: "Account locked, call the helpdesk" is
    // worth more than a bare failure.
    answer.client_text = printable_hook_text(*status);
    return answer;
  }
  answer.verdict = HookAnswer::Verdict::kAllow;
  if (response.header("Auth-Server") || response.header("Auth-Port")) {
    config::Upstream route;
    std::string problem;
    if (!route_upstream(response, settings, upstream, route, problem)) {
      return failed(std::move(problem));
    }
    answer.route = std::move(route);
  }
  if (auto mailbox = response.header("X-Popbridge-Mailbox")) {
    answer.mailbox = std::string(*mailbox);
  }
  auto user = response.header("Auth-User");
  auto password = response.header("Auth-Pass");
  if (user && password) {
    UpstreamCredentials credentials;
    credentials.user = std::string(*user);
    credentials.secret = protocol::Secret(*password);
    answer.credentials = std::move(credentials);
  }
  return answer;
}

}  // namespace popbridge::proxy
