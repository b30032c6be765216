// SPDX-License-Identifier: Apache-2.0
// URLs for the HTTP client: parsing, origins, form encoding, and the egress proxy the
// environment names (HTTPS_PROXY, HTTP_PROXY, NO_PROXY).
#include <charconv>
#include <cstdlib>

#include "protocol/common/ascii.h"
#include "proxy/net/http_client.h"
#include "proxy/net/http_text.h"

namespace popbridge::proxy {
namespace {

using http_text::bracketed;
using http_text::is_alnum;
using protocol::ascii_lowercase;

constexpr std::uint16_t kHttpPort = 80;
constexpr std::uint16_t kHttpsPort = 443;

}  // namespace

std::string HttpUrl::authority() const {
  const std::uint16_t default_port = tls ? kHttpsPort : kHttpPort;
  std::string text = bracketed(host);
  if (port != default_port) {
    text += ':' + std::to_string(port);
  }
  return text;
}

std::string HttpUrl::origin() const {
  return (tls ? "https://" : "http://") + bracketed(host) + ':' + std::to_string(port);
}

std::string HttpUrl::authority_with_port() const {
  return bracketed(host) + ':' + std::to_string(port);
}

std::string resolve_url(std::string_view base, std::string_view reference) {
  if (reference.find("://") != std::string_view::npos &&
      reference.find("://") < reference.find_first_of("/?#")) {
    return std::string(reference);
  }
  const std::size_t scheme_end = base.find("://");
  if (scheme_end == std::string_view::npos) {
    return std::string(reference);
  }
  if (reference.starts_with("//")) {
    return std::string(base.substr(0, scheme_end + 1)) + std::string(reference);
  }
  const std::size_t path_start = base.find_first_of("/?#", scheme_end + 3);
  const std::string_view origin = base.substr(0, path_start);
  if (reference.starts_with('/')) {
    return std::string(origin) + std::string(reference);
  }
  std::string_view path =
      path_start == std::string_view::npos ? std::string_view("/") : base.substr(path_start);
  path = path.substr(0, path.find_first_of("?#"));
  return std::string(origin) + std::string(path.substr(0, path.rfind('/') + 1)) +
         std::string(reference);
}

std::optional<HttpUrl> parse_http_url(std::string_view url, std::string& error) {
  HttpUrl parsed;
  const std::size_t scheme_end = url.find("://");
  const std::string scheme =
      scheme_end == std::string_view::npos ? "" : ascii_lowercase(url.substr(0, scheme_end));
  if (scheme == "http") {
    parsed.port = kHttpPort;
  } else if (scheme == "https") {
    parsed.tls = true;
    parsed.port = kHttpsPort;
  } else {
    error = "URL must start with http:// or https://";
    return std::nullopt;
  }
  std::string_view rest = url.substr(scheme_end + 3);
  const std::size_t authority_end = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, authority_end);
  std::string_view target =
      authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) {
    error = "credentials in the URL are not allowed";
    return std::nullopt;
  }

  std::string_view host;
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      error = "unterminated IPv6 address in URL";
      return std::nullopt;
    }
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') {
      error = "unexpected text after the IPv6 address in URL";
      return std::nullopt;
    }
    port_text = after.empty() ? after : after.substr(1);
    in6_addr v6{};
    if (uv_inet_pton(AF_INET6, std::string(host).c_str(), &v6) != 0) {
      error = "invalid IPv6 address in URL";
      return std::nullopt;
    }
  } else {
    const std::size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    port_text = colon == std::string_view::npos ? std::string_view() : authority.substr(colon + 1);
    const bool valid = std::all_of(host.begin(), host.end(), [](char c) {
      return is_alnum(c) || c == '-' || c == '.' || c == '_';
    });
    if (host.empty() || !valid) {
      error = "invalid host in URL";
      return std::nullopt;
    }
  }
  parsed.host = ascii_lowercase(host);
  if (!port_text.empty()) {  // "host:" means the default port (RFC 3986 section 3.2.3)
    std::uint32_t port = 0;
    const char* last = port_text.data() + port_text.size();
    const auto [end, status] = std::from_chars(port_text.data(), last, port);
    if (status != std::errc{} || end != last || port == 0 || port > 65535) {
      error = "invalid port in URL";
      return std::nullopt;
    }
    parsed.port = static_cast<std::uint16_t>(port);
  }

  target = target.substr(0, target.find('#'));
  if (!std::all_of(target.begin(), target.end(), [](char c) { return c > 0x20 && c < 0x7F; })) {
    error = "URL path must be ASCII without spaces (percent-encode it)";
    return std::nullopt;
  }
  parsed.target =
      (target.empty() || target.front() == '?') ? "/" + std::string(target) : std::string(target);
  return parsed;
}

std::string form_urlencode(std::string_view value) {
  constexpr char kHex[] = "0123456789ABCDEF";
  std::string encoded;
  encoded.reserve(value.size() * 3);
  for (char c : value) {
    if (is_alnum(c) || c == '*' || c == '-' || c == '.' || c == '_') {
      encoded += c;
    } else if (c == ' ') {
      encoded += '+';
    } else {
      const auto byte = static_cast<unsigned char>(c);
      encoded += '%';
      encoded += kHex[byte >> 4];
      encoded += kHex[byte & 0x0F];
    }
  }
  return encoded;
}

std::string form_urlencode(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string encoded;
  for (const auto& [name, value] : fields) {
    if (!encoded.empty()) {
      encoded += '&';
    }
    encoded += form_urlencode(name);
    encoded += '=';
    encoded += form_urlencode(value);
  }
  return encoded;
}

const HttpUrl* HttpProxy::for_url(const HttpUrl& url) const {
  const std::optional<HttpUrl>& proxy = url.tls ? for_https : for_http;
  if (!proxy) {
    return nullptr;
  }
  for (const std::string& entry : no_proxy) {
    if (entry == "*" || url.host == entry ||
        (url.host.size() > entry.size() && url.host.ends_with(entry) &&
         url.host[url.host.size() - entry.size() - 1] == '.')) {
      return nullptr;
    }
  }
  return &*proxy;
}

HttpProxy proxy_from_environment(std::vector<std::string>& problems) {
  auto variable = [](const char* upper, const char* lower) -> std::string {
    const char* value = std::getenv(upper);
    if (value == nullptr || *value == '\0') {
      value = std::getenv(lower);
    }
    return value == nullptr ? std::string() : std::string(value);
  };
  HttpProxy proxy;
  auto read = [&](const char* upper, const char* lower, std::optional<HttpUrl>& out) {
    std::string text = variable(upper, lower);
    if (text.empty()) {
      return;
    }
    if (text.find("://") == std::string::npos) {
      text = "http://" + text;  // "proxy:3128", as curl takes it
    }
    std::string error;
    std::optional<HttpUrl> url = parse_http_url(text, error);
    if (!url) {
      problems.push_back(std::string(upper) + ": " + error);
    } else if (url->tls) {
      problems.push_back(std::string(upper) + ": only http:// proxies are supported");
    } else {
      out = std::move(url);
    }
  };
  read("HTTP_PROXY", "http_proxy", proxy.for_http);
  read("HTTPS_PROXY", "https_proxy", proxy.for_https);
  const std::string no_proxy = variable("NO_PROXY", "no_proxy");
  std::size_t begin = 0;
  while (begin <= no_proxy.size()) {
    std::size_t end = no_proxy.find(',', begin);
    if (end == std::string::npos) {
      end = no_proxy.size();
    }
    std::string entry = ascii_lowercase(no_proxy.substr(begin, end - begin));
    entry.erase(0, entry.find_first_not_of(" \t"));
    entry.erase(entry.find_last_not_of(" \t") + 1);
    if (!entry.empty() && entry.front() == '[') {
      entry = entry.substr(1, entry.find(']') - 1);  // "[::1]:8080" -> "::1"
    } else if (std::count(entry.begin(), entry.end(), ':') == 1) {
      entry.erase(entry.find(':'));  // "host:port": every port of the host
    }
    while (!entry.empty() && entry.front() == '.') {
      entry.erase(0, 1);
    }
    if (!entry.empty()) {
      proxy.no_proxy.push_back(std::move(entry));
    }
    begin = end + 1;
  }
  return proxy;
}

}  // namespace popbridge::proxy
