// SPDX-License-Identifier: Apache-2.0
#include "proxy/identity/authenticator.h"

#include "proxy/base/log.h"
#include "proxy/identity/auth_hook.h"

namespace popbridge::proxy {
namespace {

double seconds_since(std::uint64_t start_ns) {
  return static_cast<double>(uv_hrtime() - start_ns) / 1e9;
}

LoginRefusal refusal(LoginRefusal::Kind kind, std::string text = {},
                     config::Duration wait = config::Duration(0)) {
  return LoginRefusal{kind, std::move(text), wait};
}

}  // namespace

Authenticator::Authenticator(uv_loop_t* loop, const config::Config& config,
                             const Identity& identity, HttpClient* hook, TokenSource* tokens,
                             metrics::Metrics& metrics, std::string session_id)
    : loop_(loop),
      config_(config),
      identity_(identity),
      hook_(hook),
      tokens_(tokens),
      metrics_(metrics),
      session_id_(std::move(session_id)) {}

void Authenticator::cancel() {
  done_ = nullptr;
  password_check_.reset();
  hook_request_ = HttpClient::RequestHandle();
  life_ = std::make_shared<char>(0);  // a token fetch in flight now answers nobody
}

void Authenticator::authenticate(LoginAttempt attempt, Done done) {
  cancel();
  if (attempt.user.empty() || attempt.secret.empty()) {
    done(refusal(LoginRefusal::Kind::kBadCredentials));
    return;
  }
  switch (config_.auth.mode) {
    case config::AuthMode::kPassthrough:
      upstream_credentials(attempt.user, std::move(attempt.secret), attempt.mechanism,
                           std::move(done));
      return;
    case config::AuthMode::kUsersFile: {
      done_ = std::move(done);
      const auto& hashes = identity_.password_hashes;
      auto found = hashes.find(attempt.user);
      password_check_ = std::make_unique<PasswordCheck>(loop_);
      // An unknown user is checked against the slowest hash in the file, so the answer
      // takes as long as for a known one.
      password_check_->start(
          found == hashes.end() ? std::string() : found->second, identity_.slowest_hash,
          attempt.secret, [this, user = attempt.user](bool matches) {
            Done finished = std::move(done_);
            if (!matches) {
              finished(refusal(LoginRefusal::Kind::kBadCredentials));
              return;
            }
            upstream_credentials(user, protocol::Secret(),
                                 UpstreamCredentials::Mechanism::kPassword, std::move(finished));
          });
      return;
    }
    case config::AuthMode::kHttp:
      done_ = std::move(done);
      ask_hook(std::move(attempt));
      return;
  }
}

void Authenticator::ask_hook(LoginAttempt attempt) {
  HookQuestion question{attempt.user, attempt.secret, attempt.attempt, attempt.client_address,
                        attempt.tls};
  const std::uint64_t asked_ns = uv_hrtime();
  hook_request_ =
      hook_->request(auth_hook_request(config_.auth.http, question),
                     [this, asked_ns, attempt = std::move(attempt)](HttpResult response) {
                       metrics_.hook_duration.Observe(seconds_since(asked_ns));
                       hook_answered(response, attempt);
                     });
}

void Authenticator::hook_answered(const HttpResult& response, const LoginAttempt& attempt) {
  Done done = std::move(done_);
  if (response.error == HttpError::kInvalidRequest) {
    // A user name or password with control characters cannot be a header value.
    done(refusal(LoginRefusal::Kind::kBadCredentials));
    return;
  }
  HookAnswer answer = read_auth_hook_answer(response, config_.auth.http, config_.upstream);
  (answer.verdict == HookAnswer::Verdict::kFailed ? metrics_.hook_error : metrics_.hook_ok)
      .Increment();
  switch (answer.verdict) {
    case HookAnswer::Verdict::kFailed:
      // Never a login on a hook failure: the answer is "try again later", and no sooner
      // than a wrong password would get one, so a client retrying at once does not
      // hammer a hook that is down.
      log::warn("auth_hook_failed", {{"session", session_id_}, {"reason", answer.problem}});
      done(refusal(LoginRefusal::Kind::kTemporary, {}, config_.auth.failure_delay));
      return;
    case HookAnswer::Verdict::kDeny:
      done(refusal(LoginRefusal::Kind::kBadCredentials, answer.client_text, answer.wait));
      return;
    case HookAnswer::Verdict::kAllow:
      break;
  }
  if (answer.credentials) {
    done(LoginPlan{std::move(*answer.credentials), std::move(answer.route),
                   std::move(answer.mailbox)});
    return;
  }
  upstream_credentials(attempt.user, attempt.secret, UpstreamCredentials::Mechanism::kPassword,
                       [done = std::move(done), route = std::move(answer.route),
                        mailbox = std::move(answer.mailbox)](Outcome outcome) mutable {
                         if (auto* plan = std::get_if<LoginPlan>(&outcome)) {
                           plan->route = std::move(route);
                           plan->mailbox = std::move(mailbox);
                         }
                         done(std::move(outcome));
                       });
}

void Authenticator::upstream_credentials(const std::string& user, protocol::Secret client_secret,
                                         UpstreamCredentials::Mechanism mechanism, Done done) {
  LoginPlan plan;
  const config::UpstreamLogin& login = config_.upstream.login;
  switch (login.mode) {
    case config::UpstreamLoginMode::kPassthrough:
      plan.credentials.user = user;
      plan.credentials.secret = std::move(client_secret);
      plan.credentials.mechanism = mechanism;
      break;
    case config::UpstreamLoginMode::kMaster:
      plan.credentials.authzid = user;
      plan.credentials.user = login.master_user;
      plan.credentials.secret = identity_.master_password;
      break;
    case config::UpstreamLoginMode::kMapped: {
      auto found = identity_.mapped.find(user);
      if (found == identity_.mapped.end()) {
        log::warn("no_upstream_mapping", {{"session", session_id_}, {"user", log::user(user)}});
        done(refusal(LoginRefusal::Kind::kPermanent, "No mailbox is configured for this account."));
        return;
      }
      plan.credentials.user = found->second.upstream_user;
      plan.credentials.secret = found->second.password;
      break;
    }
    case config::UpstreamLoginMode::kOAuth2:
      done_ = std::move(done);
      tokens_->get(user, life_, [this, user](const TokenSource::Result& token) {
        Done finished = std::move(done_);
        if (token.kind != TokenSource::Result::Kind::kOk) {
          finished(refusal(token.kind == TokenSource::Result::Kind::kPermanent
                               ? LoginRefusal::Kind::kPermanent
                               : LoginRefusal::Kind::kTemporary,
                           "The mail store's token service refused the login."));
          return;
        }
        LoginPlan oauth;
        oauth.credentials.mechanism =
            config_.upstream.login.oauth2.mechanism == config::OAuth2Mechanism::kXoauth2
                ? UpstreamCredentials::Mechanism::kXoauth2
                : UpstreamCredentials::Mechanism::kOauthbearer;
        oauth.credentials.user = user;
        oauth.credentials.secret = token.token;
        finished(std::move(oauth));
      });
      return;
  }
  done(std::move(plan));
}

void Authenticator::upstream_refused(const std::string& user) {
  if (tokens_ != nullptr && config_.upstream.login.mode == config::UpstreamLoginMode::kOAuth2) {
    tokens_->invalidate(user);
  }
}

}  // namespace popbridge::proxy
