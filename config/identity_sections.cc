// SPDX-License-Identifier: Apache-2.0
// The identity sections: how clients are checked (auth) and how the gateway logs in
// upstream (upstream.login, its OAuth2 settings, and secrets from files or variables).
#include <cstdlib>

#include "config/keys.h"
#include "config/loader.h"

namespace popbridge::config::detail {

void Loader::read_auth(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kAuthKeys);
  if (!m) {
    return;
  }
  Auth& auth = config_.auth;
  read_bool(m->get("allow_plaintext"), auth.allow_plaintext);
  read_duration(m->get("failure_delay"), auth.failure_delay);
  read_duration(m->get("max_failure_delay"), auth.max_failure_delay);
  read_duration(m->get("failure_memory"), auth.failure_memory);
  read_uint(m->get("max_attempts"), 1, 100, auth.max_attempts);
  read_bool(m->get("exclusive_sessions"), auth.exclusive_sessions);
  const std::optional<Value> mode = m->get("mode");
  if (!read_choice(mode, kAuthModes, auth.mode)) {
    return;
  }
  const std::optional<Value> users = m->get("users_file");
  if (auth.mode == AuthMode::kUsersFile && !users) {
    error(mode->path, mode->line, "mode users_file needs auth.users_file");
  } else if (read_string(users, auth.users_file) && users) {
    check_readable(users->path, users->line, auth.users_file);
  }
  const std::optional<Value> http = m->get("http");
  if (auth.mode == AuthMode::kHttp && !http) {
    error(mode->path, mode->line, "mode http needs auth.http.url");
  }
  if (!http) {
    return;
  }
  std::optional<MapReader> h = open_map(http, kHttpAuthKeys);
  if (!h) {
    return;
  }
  const std::optional<Value> url = h->required("url");
  if (url && read_string(url, auth.http.url) && auth.http.url.rfind("http://", 0) != 0 &&
      auth.http.url.rfind("https://", 0) != 0) {
    error(url->path, url->line, "expected an http:// or https:// URL");
  }
  read_duration(h->get("timeout"), auth.http.timeout);
  const std::optional<Value> ca = h->get("ca_file");
  read_string(ca, auth.http.ca_file);
  read_bool(h->get("verify_certificate"), auth.http.verify_certificate);
  read_choice(h->get("route_tls"), kRouteTlsModes, auth.http.route_tls);
  if (auth.http.url.rfind("https://", 0) == 0 && auth.http.verify_certificate) {
    check_readable(ca ? ca->path : join(http->path, "ca_file"), ca ? ca->line : h->line(),
                   auth.http.ca_file);
  }
}

void Loader::read_secret(const MapReader& m, const Value& parent, std::string_view base,
                         SecretSource& out, bool required) {
  const std::string file_key = std::string(base) + "_file";
  const std::string env_key = std::string(base) + "_env";
  if (const std::optional<Value> inline_secret = m.get(base)) {
    error(inline_secret->path, inline_secret->line,
          "secrets are not written in the config: use " + file_key + " or " + env_key);
  }
  const std::optional<Value> file = m.get(file_key);
  const std::optional<Value> env = m.get(env_key);
  if (read_string(file, out.file) && file) {
    check_readable(file->path, file->line, out.file);
  }
  if (read_string(env, out.env) && env && std::getenv(out.env.c_str()) == nullptr) {
    error(env->path, env->line, "environment variable " + quoted(out.env) + " is not set");
  }
  if (file && env) {
    error(env->path, env->line, "give " + file_key + " or " + env_key + ", not both");
  }
  if (required && !file && !env) {
    error(parent.path, parent.line, "needs " + file_key + " or " + env_key);
  }
}

void Loader::read_login(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kLoginKeys);
  if (!m) {
    return;
  }
  UpstreamLogin& login = config_.upstream.login;
  const std::optional<Value> mode = m->get("mode");
  if (!read_choice(mode, kLoginModes, login.mode)) {
    return;
  }
  login_mode_line_ = mode ? mode->line : v->line;
  const bool master = login.mode == UpstreamLoginMode::kMaster;
  read_string(master ? m->required("master_user") : m->get("master_user"), login.master_user);
  read_secret(*m, *v, "master_password", login.master_password, master);
  const std::optional<Value> credentials = login.mode == UpstreamLoginMode::kMapped
                                               ? m->required("credentials_file")
                                               : m->get("credentials_file");
  if (read_string(credentials, login.credentials_file) && credentials) {
    check_readable(credentials->path, credentials->line, login.credentials_file);
  }
  const std::optional<Value> oauth2 =
      login.mode == UpstreamLoginMode::kOAuth2 ? m->required("oauth2") : m->get("oauth2");
  if (!oauth2) {
    return;
  }
  std::optional<MapReader> o = open_map(oauth2, kOAuth2Keys);
  if (!o) {
    return;
  }
  OAuth2& settings = login.oauth2;
  const std::optional<Value> url = o->required("token_url");
  if (url && read_string(url, settings.token_url) && settings.token_url.rfind("https://", 0) != 0 &&
      settings.token_url.rfind("http://", 0) != 0) {
    error(url->path, url->line, "expected an https:// URL");
  }
  read_choice(o->get("grant"), kGrants, settings.grant);
  read_string(o->required("client_id"), settings.client_id);
  read_secret(*o, *oauth2, "client_secret", settings.client_secret,
              settings.grant == OAuth2Grant::kClientCredentials);
  const std::optional<Value> tokens = settings.grant == OAuth2Grant::kRefreshToken
                                          ? o->required("refresh_tokens_file")
                                          : o->get("refresh_tokens_file");
  if (read_string(tokens, settings.refresh_tokens_file) && tokens) {
    check_readable(tokens->path, tokens->line, settings.refresh_tokens_file);
  }
  read_string(o->get("scope"), settings.scope);
  read_choice(o->get("mechanism"), kOAuth2Mechanisms, settings.mechanism);
  read_string(o->get("ca_file"), settings.ca_file);
  read_bool(o->get("verify_certificate"), settings.verify_certificate);
}

}  // namespace popbridge::config::detail
