// SPDX-License-Identifier: Apache-2.0
#include "proxy/identity/oauth2_tokens.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "proxy/base/log.h"

namespace popbridge::proxy {
namespace {

// Refresh this long before the endpoint's expiry, or at half the lifetime of a short one,
// so a token never expires between fetching the mailbox list and the last RETR.
constexpr std::chrono::seconds kRefreshMargin{60};
// How often a worker looks for the token another worker is fetching.
constexpr std::uint64_t kPollMs = 20;

HttpClientOptions options_for(const config::OAuth2& settings, const HttpProxy& proxy) {
  HttpClientOptions options;
  options.proxy = proxy;
  options.ca_file = settings.ca_file;
  options.verify_certificate = settings.verify_certificate;
  return options;
}

}  // namespace

protocol::Secret TokenCache::find(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto found = tokens_.find(key);
  if (found == tokens_.end() || now_() >= found->second.refresh_after) {
    return {};
  }
  return found->second.token;
}

void TokenCache::store(const std::string& key, protocol::Secret token,
                       std::chrono::seconds lifetime) {
  const auto margin = std::min<std::chrono::seconds>(kRefreshMargin, lifetime / 2);
  std::lock_guard lock(mutex_);
  tokens_[key] = Entry{std::move(token), now_() + lifetime - margin};
}

void TokenCache::forget(const std::string& key) {
  std::lock_guard lock(mutex_);
  tokens_.erase(key);
}

protocol::Secret TokenCache::rotated_refresh_token(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto found = refresh_tokens_.find(key);
  return found == refresh_tokens_.end() ? protocol::Secret() : found->second;
}

void TokenCache::store_refresh_token(const std::string& key, protocol::Secret token) {
  std::lock_guard lock(mutex_);
  refresh_tokens_[key] = std::move(token);
}

bool TokenCache::claim(const std::string& key) {
  std::lock_guard lock(mutex_);
  return claimed_.insert(key).second;
}

void TokenCache::release(const std::string& key) {
  std::lock_guard lock(mutex_);
  claimed_.erase(key);
}

TokenSource::TokenSource(uv_loop_t* loop, const config::OAuth2& settings, const Identity& identity,
                         TokenCache& cache, const HttpProxy& proxy, metrics::Metrics* metrics)
    : settings_(settings),
      identity_(identity),
      cache_(cache),
      http_(loop, options_for(settings, proxy)),
      metrics_(metrics),
      poll_(loop) {}

TokenSource::~TokenSource() {
  // A fetch cut short (the worker stops, or new settings replace this source) must not
  // leave the other workers waiting for it.
  for (const std::string& key : claimed_) {
    cache_.release(key);
  }
}

std::string TokenSource::key_for(const std::string& user) const {
  // A service account's token (client_credentials) serves every user.
  return settings_.grant == config::OAuth2Grant::kClientCredentials ? std::string() : user;
}

void TokenSource::invalidate(const std::string& user) { cache_.forget(key_for(user)); }

void TokenSource::get(const std::string& user, std::weak_ptr<void> alive, Callback done) {
  const std::string key = key_for(user);
  protocol::Secret cached = cache_.find(key);
  if (metrics_ != nullptr) {
    (cached.empty() ? metrics_->token_cache_miss : metrics_->token_cache_hit).Increment();
  }
  if (!cached.empty()) {
    Result result;
    result.kind = Result::Kind::kOk;
    result.token = std::move(cached);
    done(result);
    return;
  }
  waiting_[key].push_back(Waiter{std::move(alive), std::move(done)});
  if (in_flight_.count(key) == 0 && elsewhere_.count(key) == 0) {
    start(key, user);
  }
}

void TokenSource::start(const std::string& key, const std::string& user) {
  if (cache_.claim(key)) {
    claimed_.insert(key);
    fetch(key, user);
    return;
  }
  elsewhere_.emplace(key, user);
  if (!poll_.active()) {
    poll_.start(kPollMs, [this] { check_elsewhere(); });
  }
}

void TokenSource::check_elsewhere() {
  std::vector<std::pair<std::string, std::string>> keys(elsewhere_.begin(), elsewhere_.end());
  for (const auto& [key, user] : keys) {
    if (protocol::Secret token = cache_.find(key); !token.empty()) {
      elsewhere_.erase(key);
      Result result;
      result.kind = Result::Kind::kOk;
      result.token = std::move(token);
      finish(key, result);
    } else if (cache_.claim(key)) {
      // The other fetch ended without a token: this worker asks for itself, and gets
      // the endpoint's own answer to pass on.
      elsewhere_.erase(key);
      claimed_.insert(key);
      fetch(key, user);
    }
  }
  if (!elsewhere_.empty()) {
    poll_.start(kPollMs, [this] { check_elsewhere(); });
  }
}

void TokenSource::fetch(const std::string& key, const std::string& user) {
  finished_.clear();
  std::vector<std::pair<std::string, std::string>> form;
  if (settings_.grant == config::OAuth2Grant::kRefreshToken) {
    protocol::Secret refresh = cache_.rotated_refresh_token(key);
    if (refresh.empty()) {
      auto found = identity_.refresh_tokens.find(user);
      if (found == identity_.refresh_tokens.end()) {
        Result result;
        result.kind = Result::Kind::kPermanent;
        result.error = "no refresh token for this user";
        finish(key, result);
        return;
      }
      refresh = found->second;
    }
    form = {{"grant_type", "refresh_token"}, {"refresh_token", std::string(refresh.view())}};
  } else {
    form = {{"grant_type", "client_credentials"}};
  }
  form.emplace_back("client_id", settings_.client_id);
  if (!identity_.oauth2_client_secret.empty()) {
    form.emplace_back("client_secret", std::string(identity_.oauth2_client_secret.view()));
  }
  if (!settings_.scope.empty()) {
    form.emplace_back("scope", settings_.scope);
  }
  HttpRequest request;
  request.method = "POST";
  request.url = settings_.token_url;
  request.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
                     {"Accept", "application/json"}};
  request.body = form_urlencode(form);
  for (auto& [name, value] : form) {
    protocol::wipe(value.data(), value.size());
  }
  const std::uint64_t asked_ns = uv_hrtime();
  in_flight_[key] = http_.request(std::move(request), [this, key, asked_ns](HttpResult response) {
    if (metrics_ != nullptr) {
      metrics_->token_duration.Observe(static_cast<double>(uv_hrtime() - asked_ns) / 1e9);
      // A refusal (4xx with an OAuth2 error) is an answer; no answer or a 5xx is not.
      (response.ok() && response.status < 500 ? metrics_->token_ok : metrics_->token_error)
          .Increment();
    }
    Result result;
    const nlohmann::json body = nlohmann::json::parse(response.body, nullptr, false);
    if (!response.ok()) {
      // error_text never holds the request (so no secret): it says why, for the log.
      result.error =
          "token endpoint: " + std::string(to_string(response.error)) + ": " + response.error_text;
    } else if (response.status == 200 && body.is_object() && body.contains("access_token") &&
               body["access_token"].is_string()) {
      result.kind = Result::Kind::kOk;
      result.token = protocol::Secret(body["access_token"].get<std::string>());
      std::int64_t lifetime = 3600;  // RFC 6749 §5.1: expires_in is RECOMMENDED, not required
      if (body.contains("expires_in") && body["expires_in"].is_number_integer()) {
        lifetime = std::max<std::int64_t>(1, body["expires_in"].get<std::int64_t>());
      }
      cache_.store(key, result.token, std::chrono::seconds(lifetime));
      if (body.contains("refresh_token") && body["refresh_token"].is_string()) {
        cache_.store_refresh_token(key, protocol::Secret(body["refresh_token"].get<std::string>()));
      }
    } else {
      const std::string error =
          body.is_object() && body.contains("error") && body["error"].is_string()
              ? body["error"].get<std::string>()
              : "HTTP " + std::to_string(response.status);
      // RFC 6749 §5.2: a refused grant or client will not work by asking again.
      const bool permanent = error == "invalid_grant" || error == "invalid_client" ||
                             error == "unauthorized_client" || error == "invalid_scope";
      result.kind = permanent ? Result::Kind::kPermanent : Result::Kind::kTemporary;
      result.error = "token endpoint refused: " + error;
    }
    if (!response.body.empty()) {
      protocol::wipe(response.body.data(), response.body.size());
    }
    finish(key, result);
  });
}

void TokenSource::finish(const std::string& key, const Result& result) {
  if (result.kind != Result::Kind::kOk) {
    log::warn("oauth2_token_failed", {{"reason", result.error}});
  }
  if (claimed_.erase(key) != 0) {
    cache_.release(key);  // after the token went into the cache: no worker fetches again
  }
  std::vector<Waiter> waiters = std::move(waiting_[key]);
  waiting_.erase(key);
  // The handle's own callback may be running: keep the handle until the next fetch.
  if (auto found = in_flight_.find(key); found != in_flight_.end()) {
    finished_.push_back(std::move(found->second));
    in_flight_.erase(found);
  }
  for (Waiter& waiter : waiters) {
    if (!waiter.alive.expired()) {
      waiter.done(result);
    }
  }
}

}  // namespace popbridge::proxy
