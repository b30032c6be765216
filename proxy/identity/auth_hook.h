// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"
#include "protocol/common/secret.h"
#include "proxy/base/upstream_credentials.h"
#include "proxy/net/http_client.h"

namespace popbridge::proxy {

// auth.mode: http speaks nginx's auth_http protocol, so a hook written for nginx's mail
// proxy works as it is. These two functions are the whole protocol; no I/O.

struct HookQuestion {
  std::string user;
  protocol::Secret password;
  std::uint32_t attempt = 1;  // this connection's login attempt, from 1
  std::string client_address;
  bool tls = false;  // the client's connection is encrypted
};

// The request to send: nginx's header names, with user and password escaped as nginx does.
HttpRequest auth_hook_request(const config::HttpAuth& settings, const HookQuestion& question);

struct HookAnswer {
  enum class Verdict {
    kAllow,   // Auth-Status: OK
    kDeny,    // any other Auth-Status: the credentials (or the account) are refused
    kFailed,  // no usable answer: never a login, "try again later"
  };
  Verdict verdict = Verdict::kFailed;
  std::string client_text;   // kDeny: the hook's text for the client (printable, short)
  config::Duration wait{0};  // kDeny: Auth-Wait, at most 60 s
  std::string problem;       // kFailed: why, for the log
  // kAllow: where and as whom to log in upstream, when the hook says.
  std::optional<config::Upstream> route;           // Auth-Server/Auth-Port and popbridge's headers
  std::optional<std::string> mailbox;              // X-Popbridge-Mailbox
  std::optional<UpstreamCredentials> credentials;  // Auth-User and Auth-Pass together
};

// Reads the hook's response; upstream is what a route starts from (the configured one).
HookAnswer read_auth_hook_answer(const HttpResult& response, const config::HttpAuth& settings,
                                 const config::Upstream& upstream);

}  // namespace popbridge::proxy
