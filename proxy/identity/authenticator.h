// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "config/config.h"
#include "metrics/metrics.h"
#include "protocol/common/secret.h"
#include "proxy/base/upstream_credentials.h"
#include "proxy/identity/identity.h"
#include "proxy/identity/oauth2_tokens.h"
#include "proxy/identity/password_check.h"
#include "proxy/net/http_client.h"

namespace popbridge::proxy {

// One client's login, as the POP3 layer hands it over.
struct LoginAttempt {
  std::string user;
  protocol::Secret secret;  // a password, or the client's own token
  // kXoauth2/kOauthbearer: secret is a token the client sent (AUTH XOAUTH2/OAUTHBEARER).
  UpstreamCredentials::Mechanism mechanism = UpstreamCredentials::Mechanism::kPassword;
  std::uint32_t attempt = 1;  // on this connection, from 1
  std::string client_address;
  bool tls = false;
};

// What a successful check leads to: whom to log in as upstream, and where.
struct LoginPlan {
  UpstreamCredentials credentials;
  std::optional<config::Upstream> route;  // an auth hook chose the server
  std::optional<std::string> mailbox;     // an auth hook chose the mailbox
};

// Why not; the POP3 layer turns it into a response code.
struct LoginRefusal {
  enum class Kind {
    kBadCredentials,  // [AUTH]: a wrong password, or refused by the hook
    kTemporary,       // [SYS/TEMP]: the hook or the token service could not answer
    kPermanent,       // [SYS/PERM]: the gateway cannot log this user in (configuration)
  };
  Kind kind = Kind::kBadCredentials;
  std::string text;          // for the client; empty: the POP3 layer's default
  config::Duration wait{0};  // wait at least this long before answering (the hook said)
};

// Turns auth.mode (who checks the client: the upstream, a users file or an auth hook)
// and upstream.login.mode (whom popbridge logs in as: the client, a master user, a
// mapped account or an OAuth2 token) into a LoginPlan. One per session, on its loop;
// destroying it cancels what is in progress, and no callback comes after.
class Authenticator {
 public:
  using Outcome = std::variant<LoginPlan, LoginRefusal>;
  using Done = std::function<void(Outcome)>;

  // hook and tokens: null unless auth.mode is http, or upstream.login.mode oauth2.
  Authenticator(uv_loop_t* loop, const config::Config& config, const Identity& identity,
                HttpClient* hook, TokenSource* tokens, metrics::Metrics& metrics,
                std::string session_id);
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  // Checks the client as auth.mode says, then chooses the upstream credentials. With
  // auth.mode passthrough the check is the upstream's: the plan carries the client's
  // credentials and the store's answer decides.
  void authenticate(LoginAttempt attempt, Done done);
  // The upstream credentials for a user the gateway has checked (or, with passthrough,
  // will let the upstream check): client_secret is used only by passthrough.
  void upstream_credentials(const std::string& user, protocol::Secret client_secret,
                            UpstreamCredentials::Mechanism mechanism, Done done);
  // The upstream refused the gateway's own credentials for user (an OAuth2 token revoked
  // early): the next login must not present them again.
  void upstream_refused(const std::string& user);
  // Drops whatever is in progress; its callback never comes.
  void cancel();

 private:
  void ask_hook(LoginAttempt attempt);
  void hook_answered(const HttpResult& response, const LoginAttempt& attempt);

  uv_loop_t* loop_;
  const config::Config& config_;
  const Identity& identity_;
  HttpClient* hook_;
  TokenSource* tokens_;
  metrics::Metrics& metrics_;
  std::string session_id_;
  Done done_;
  std::unique_ptr<PasswordCheck> password_check_;
  HttpClient::RequestHandle hook_request_;
  // A token fetch may answer after this is gone: it holds this weakly.
  std::shared_ptr<char> life_ = std::make_shared<char>(0);
};

}  // namespace popbridge::proxy
