// SPDX-License-Identifier: Apache-2.0
// The effective configuration as YAML (popbridge --print-config), every key with the
// value in force, defaults included, like `doveconf -n`. Secrets are shown by source only.
#include <yaml-cpp/yaml.h>

#include <string>

#include "config/config.h"

namespace popbridge::config {
namespace {

std::string duration(Duration value) {
  const auto ms = value.count();
  if (ms % 1000 != 0) {
    return std::to_string(ms) + "ms";
  }
  const auto seconds = ms / 1000;
  if (seconds != 0 && seconds % 3600 == 0) {
    return std::to_string(seconds / 3600) + "h";
  }
  if (seconds != 0 && seconds % 60 == 0) {
    return std::to_string(seconds / 60) + "m";
  }
  return std::to_string(seconds) + "s";
}

std::string size(std::size_t bytes) {
  if (bytes != 0 && bytes % (1024 * 1024) == 0) {
    return std::to_string(bytes / (1024 * 1024)) + "MiB";
  }
  if (bytes != 0 && bytes % 1024 == 0) {
    return std::to_string(bytes / 1024) + "KiB";
  }
  return std::to_string(bytes);
}

const char* tls_mode(TlsMode mode) {
  switch (mode) {
    case TlsMode::kNone:
      return "none";
    case TlsMode::kStartTls:
      return "starttls";
    case TlsMode::kImplicit:
      return "implicit";
  }
  return "implicit";
}

void secret(YAML::Emitter& out, const char* key, const SecretSource& source) {
  if (!source.file.empty()) {
    out << YAML::Key << (std::string(key) + "_file") << YAML::Value << source.file;
  }
  if (!source.env.empty()) {
    out << YAML::Key << (std::string(key) + "_env") << YAML::Value << source.env;
  }
}

void upstream(YAML::Emitter& out, const Upstream& up) {
  out << YAML::Key << "upstream" << YAML::Value << YAML::BeginMap;
  const bool imap = up.protocol == UpstreamProtocol::kImap;
  out << YAML::Key << "protocol" << YAML::Value << (imap ? "imap" : "jmap");
  if (imap) {
    out << YAML::Key << "address" << YAML::Value << up.address.to_string();
    out << YAML::Key << "tls" << YAML::Value << tls_mode(up.tls);
  } else {
    out << YAML::Key << "url" << YAML::Value << up.url;
    out << YAML::Key << "remember_session" << YAML::Value << duration(up.remember_session);
  }
  out << YAML::Key << "ca_file" << YAML::Value << up.ca_file;
  out << YAML::Key << "verify_certificate" << YAML::Value << up.verify_certificate;
  out << YAML::Key << "server_name" << YAML::Value << up.server_name;
  out << YAML::Key << "mailbox" << YAML::Value << up.mailbox;
  out << YAML::Key << "connect_timeout" << YAML::Value << duration(up.connect_timeout);
  out << YAML::Key << "command_timeout" << YAML::Value << duration(up.command_timeout);
  if (imap) {
    out << YAML::Key << "mark_seen" << YAML::Value << up.mark_seen;
    out << YAML::Key << "uidl_format" << YAML::Value << YAML::DoubleQuoted << up.uidl_format.text();
    out << YAML::Key << "reuse_xuidl" << YAML::Value << up.reuse_xuidl;
    out << YAML::Key << "expunge_without_uidplus" << YAML::Value << up.expunge_without_uidplus;
    out << YAML::Key << "send_id" << YAML::Value << up.send_id;
    out << YAML::Key << "pipelining" << YAML::Value << up.pipelining;
    out << YAML::Key << "keepalive_idle" << YAML::Value << duration(up.keepalive_idle);
    out << YAML::Key << "keepalive_interval" << YAML::Value << duration(up.keepalive_interval);
    out << YAML::Key << "keepalive_count" << YAML::Value << up.keepalive_count;
    out << YAML::Key << "login_reuse" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "idle" << YAML::Value << duration(up.login_reuse.idle);
    out << YAML::Key << "max_age" << YAML::Value << duration(up.login_reuse.max_age);
    out << YAML::Key << "max" << YAML::Value << up.login_reuse.max;
    out << YAML::EndMap;
  }
  const UpstreamLogin& login = up.login;
  out << YAML::Key << "login" << YAML::Value << YAML::BeginMap;
  switch (login.mode) {
    case UpstreamLoginMode::kPassthrough:
      out << YAML::Key << "mode" << YAML::Value << "passthrough";
      break;
    case UpstreamLoginMode::kMaster:
      out << YAML::Key << "mode" << YAML::Value << "master";
      out << YAML::Key << "master_user" << YAML::Value << login.master_user;
      secret(out, "master_password", login.master_password);
      break;
    case UpstreamLoginMode::kMapped:
      out << YAML::Key << "mode" << YAML::Value << "mapped";
      out << YAML::Key << "credentials_file" << YAML::Value << login.credentials_file;
      break;
    case UpstreamLoginMode::kOAuth2: {
      const OAuth2& o = login.oauth2;
      out << YAML::Key << "mode" << YAML::Value << "oauth2";
      out << YAML::Key << "oauth2" << YAML::Value << YAML::BeginMap;
      out << YAML::Key << "token_url" << YAML::Value << o.token_url;
      out << YAML::Key << "grant" << YAML::Value
          << (o.grant == OAuth2Grant::kRefreshToken ? "refresh_token" : "client_credentials");
      out << YAML::Key << "client_id" << YAML::Value << o.client_id;
      secret(out, "client_secret", o.client_secret);
      if (!o.refresh_tokens_file.empty()) {
        out << YAML::Key << "refresh_tokens_file" << YAML::Value << o.refresh_tokens_file;
      }
      out << YAML::Key << "scope" << YAML::Value << o.scope;
      out << YAML::Key << "mechanism" << YAML::Value
          << (o.mechanism == OAuth2Mechanism::kXoauth2 ? "xoauth2" : "oauthbearer");
      out << YAML::Key << "ca_file" << YAML::Value << o.ca_file;
      out << YAML::Key << "verify_certificate" << YAML::Value << o.verify_certificate;
      out << YAML::EndMap;
      break;
    }
  }
  out << YAML::EndMap;
  static constexpr const char* kActions[] = {"expunge", "move", "hide", "keep"};
  if (up.uidl_map.metadata) {
    out << YAML::Key << "uidl_map" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "store" << YAML::Value << "metadata";
    out << YAML::EndMap;
  } else if (!up.uidl_map.directory.empty()) {
    out << YAML::Key << "uidl_map" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "store" << YAML::Value << "directory";
    out << YAML::Key << "directory" << YAML::Value << up.uidl_map.directory;
    out << YAML::EndMap;
  }
  out << YAML::Key << "on_delete" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "action" << YAML::Value
      << kActions[static_cast<std::size_t>(up.on_delete.action)];
  out << YAML::Key << "folder" << YAML::Value << YAML::DoubleQuoted << up.on_delete.folder;
  out << YAML::Key << "keyword" << YAML::Value << YAML::DoubleQuoted << up.on_delete.keyword;
  out << YAML::EndMap << YAML::EndMap;
}

void auth(YAML::Emitter& out, const Auth& a) {
  out << YAML::Key << "auth" << YAML::Value << YAML::BeginMap;
  switch (a.mode) {
    case AuthMode::kPassthrough:
      out << YAML::Key << "mode" << YAML::Value << "passthrough";
      break;
    case AuthMode::kUsersFile:
      out << YAML::Key << "mode" << YAML::Value << "users_file";
      out << YAML::Key << "users_file" << YAML::Value << a.users_file;
      break;
    case AuthMode::kHttp:
      out << YAML::Key << "mode" << YAML::Value << "http";
      out << YAML::Key << "http" << YAML::Value << YAML::BeginMap;
      out << YAML::Key << "url" << YAML::Value << a.http.url;
      out << YAML::Key << "timeout" << YAML::Value << duration(a.http.timeout);
      out << YAML::Key << "ca_file" << YAML::Value << a.http.ca_file;
      out << YAML::Key << "verify_certificate" << YAML::Value << a.http.verify_certificate;
      out << YAML::Key << "route_tls" << YAML::Value
          << (a.http.route_tls ? tls_mode(*a.http.route_tls) : "inherit");
      out << YAML::EndMap;
      break;
  }
  out << YAML::Key << "allow_plaintext" << YAML::Value << a.allow_plaintext;
  out << YAML::Key << "failure_delay" << YAML::Value << duration(a.failure_delay);
  out << YAML::Key << "max_failure_delay" << YAML::Value << duration(a.max_failure_delay);
  out << YAML::Key << "failure_memory" << YAML::Value << duration(a.failure_memory);
  out << YAML::Key << "max_attempts" << YAML::Value << a.max_attempts;
  out << YAML::Key << "exclusive_sessions" << YAML::Value << a.exclusive_sessions;
  out << YAML::EndMap;
}

}  // namespace

std::string to_yaml(const Config& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "workers" << YAML::Value;
  if (config.workers == 0) {
    out << "auto";
  } else {
    out << config.workers;
  }
  out << YAML::Key << "listeners" << YAML::Value << YAML::BeginSeq;
  for (const Listener& listener : config.listeners) {
    out << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << listener.name;
    out << YAML::Key << "address" << YAML::Value << listener.address.to_string();
    out << YAML::Key << "tls" << YAML::Value << tls_mode(listener.tls);
    out << YAML::Key << "proxy_protocol" << YAML::Value << listener.proxy_protocol;
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  if (!config.tls.certificate.empty()) {
    out << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "certificate" << YAML::Value << config.tls.certificate;
    out << YAML::Key << "private_key" << YAML::Value << config.tls.private_key;
    out << YAML::Key << "min_version" << YAML::Value << YAML::DoubleQuoted
        << (config.tls.min_version == TlsVersion::k1_3 ? "1.3" : "1.2");
    out << YAML::EndMap;
  }
  upstream(out, config.upstream);
  auth(out, config.auth);
  out << YAML::Key << "pop3" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "login_delay" << YAML::Value << duration(config.pop3.login_delay);
  out << YAML::Key << "workarounds" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  if (config.pop3.workarounds.outlook_no_nuls) {
    out << "outlook-no-nuls";
  }
  if (config.pop3.workarounds.oe_ns_eoh) {
    out << "oe-ns-eoh";
  }
  out << YAML::EndSeq;
  out << YAML::EndMap;
  const Limits& limits = config.limits;
  out << YAML::Key << "limits" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "idle_timeout" << YAML::Value << duration(limits.idle_timeout);
  out << YAML::Key << "drain_timeout" << YAML::Value << duration(limits.drain_timeout);
  out << YAML::Key << "max_connections" << YAML::Value << limits.max_connections;
  out << YAML::Key << "client_write_high_watermark" << YAML::Value
      << size(limits.client_write_high_watermark);
  out << YAML::Key << "client_write_low_watermark" << YAML::Value
      << size(limits.client_write_low_watermark);
  out << YAML::Key << "read_ahead" << YAML::Value << size(limits.read_ahead);
  out << YAML::EndMap;
  out << YAML::Key << "logging" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "level" << YAML::Value << config.logging.level;
  out << YAML::Key << "format" << YAML::Value
      << (config.logging.format == LogFormat::kJson ? "json" : "logfmt");
  out << YAML::Key << "user" << YAML::Value
      << (config.logging.user == UserLogging::kHash   ? "hash"
          : config.logging.user == UserLogging::kOmit ? "omit"
                                                      : "plain");
  out << YAML::EndMap;
  if (config.metrics.address) {
    out << YAML::Key << "metrics" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "address" << YAML::Value << config.metrics.address->to_string();
    out << YAML::Key << "probe_interval" << YAML::Value << duration(config.metrics.probe_interval);
    out << YAML::Key << "probe_failures" << YAML::Value << config.metrics.probe_failures;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace popbridge::config
