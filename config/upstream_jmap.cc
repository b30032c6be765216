// SPDX-License-Identifier: Apache-2.0
// The upstream section for protocol: jmap: where the session resource is, and which of
// the IMAP upstream's keys mean nothing for it (refused, so that no one believes a
// setting works that is not used).
#include "config/loader.h"

namespace popbridge::config::detail {

bool Loader::read_jmap_url(const MapReader& m, Upstream& up) {
  const std::optional<Value> url = m.required("url");
  if (!url || !read_string(url, up.url)) {
    return false;
  }
  std::string_view rest = up.url;
  bool tls = false;
  if (rest.starts_with("https://")) {
    tls = true;
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else {
    error(url->path, url->line,
          "expected the https:// URL of the JMAP session resource (like "
          "https://jmap.example.org/.well-known/jmap), got " +
              quoted(up.url));
    return false;
  }
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos) {
    error(url->path, url->line,
          "credentials do not belong in the URL: the client's, or upstream.login's, are sent");
    return false;
  }
  std::string with_port(authority);
  const bool bracketed = with_port.starts_with('[');
  const std::size_t colon = with_port.rfind(':');
  if (colon == std::string::npos || (bracketed && with_port.back() == ']')) {
    with_port += tls ? ":443" : ":80";
  }
  std::string why;
  std::optional<Endpoint> endpoint = parse_endpoint(with_port, why);
  if (!endpoint) {
    error(url->path, url->line, "the URL's host and port: " + why + ", got " + quoted(up.url));
    return false;
  }
  up.address = std::move(*endpoint);
  up.tls = tls ? TlsMode::kImplicit : TlsMode::kNone;
  if (!tls) {
    if (is_loopback(up.address.host)) {
      warn(url->path, url->line, "plain http://: passwords go unencrypted (loopback only)");
    } else {
      error(url->path, url->line,
            "plain http:// is allowed only to a loopback address: passwords would cross the "
            "network unencrypted; use https://");
      return false;
    }
  }
  return true;
}

void Loader::refuse_imap_only_keys(const MapReader& m, const Upstream& up) {
  static constexpr std::string_view kImapOnly[] = {"address",
                                                   "tls",
                                                   "uidl_format",
                                                   "reuse_xuidl",
                                                   "uidl_map",
                                                   "mark_seen",
                                                   "expunge_without_uidplus",
                                                   "send_id",
                                                   "pipelining",
                                                   "keepalive_idle",
                                                   "keepalive_interval",
                                                   "keepalive_count",
                                                   "login_reuse"};
  for (const std::string_view key : kImapOnly) {
    if (const std::optional<Value> value = m.get(key)) {
      error(value->path, value->key_line,
            "an IMAP upstream's setting, not used with protocol: jmap" +
                std::string(key == "address" || key == "tls" ? " (the url says where and how)"
                            : key == "uidl_format"           ? " (a JMAP message's UIDL is its id)"
                                                             : ""));
    }
  }
  if (up.login.mode == UpstreamLoginMode::kMaster) {
    error("upstream.login.mode", login_mode_line_,
          "a master login needs an authorization identity, which HTTP authentication has not; "
          "not available with protocol: jmap");
  }
}

}  // namespace popbridge::config::detail
