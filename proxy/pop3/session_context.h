// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <atomic>
#include <memory>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/identity/identity.h"
#include "proxy/identity/login_guard.h"
#include "proxy/identity/oauth2_tokens.h"
#include "proxy/mailstore/mail_store.h"
#include "proxy/net/http_client.h"
#include "proxy/net/tls_context.h"
#include "proxy/pop3/mailbox_history.h"
#include "proxy/pop3/uidl_map_cache.h"

namespace popbridge::proxy {

class Pop3Session;

// The configuration and the TLS contexts made from it. A reload makes a new one; each
// session keeps the one it started with, so a reload never changes a session midway.
// What sessions learned about the upstream of these settings; shared by every worker.
// -1 unknown, 0 no, 1 yes.
struct UpstreamFacts {
  std::atomic<int> xoauth2{-1};
  std::atomic<int> oauthbearer{-1};
};

struct Settings {
  config::Config config;
  std::shared_ptr<UpstreamFacts> facts = std::make_shared<UpstreamFacts>();
  SslCtxPtr server_tls;    // null when no listener uses TLS
  SslCtxPtr upstream_tls;  // null when the upstream is plain
  std::shared_ptr<const Identity> identity;
  // HTTPS_PROXY/HTTP_PROXY/NO_PROXY, for the auth hook and the token endpoint; and why a
  // variable could not be used (warnings at start-up and in --check-config).
  HttpProxy egress_proxy;
  std::vector<std::string> egress_proxy_problems;
  // upstream.uidl_map.store: metadata: the maps last read, for every worker.
  std::shared_ptr<UidlMapCache> uidl_maps = std::make_shared<UidlMapCache>();
  // The backend upstream.protocol names; session tests put a fake store here.
  MailStoreFactory make_store = make_mail_store;
};
using SettingsPtr = std::shared_ptr<const Settings>;

// What a session works with; it holds its Settings alive.
struct SessionContext {
  SessionContext(uv_loop_t* event_loop, SettingsPtr current, metrics::Metrics& registry,
                 LoginGuard& login_guard, MailboxHistory& mailbox_history,
                 std::shared_ptr<HttpClient> hook, std::shared_ptr<TokenSource> token_source,
                 std::shared_ptr<LoginPool> login_pool = nullptr)
      : loop(event_loop),
        settings(std::move(current)),
        auth_http(std::move(hook)),
        tokens(std::move(token_source)),
        logins(std::move(login_pool)),
        config(settings->config),
        server_tls(settings->server_tls.get()),
        upstream_tls(settings->upstream_tls.get()),
        identity(*settings->identity),
        metrics(registry),
        guard(login_guard),
        mailboxes(mailbox_history) {}
  uv_loop_t* loop;
  SettingsPtr settings;
  // Per worker loop, made for these settings; null when not configured. Declared after
  // settings, so they go first: they refer to it.
  std::shared_ptr<HttpClient> auth_http;
  std::shared_ptr<TokenSource> tokens;
  std::shared_ptr<LoginPool> logins;
  const config::Config& config;
  SSL_CTX* server_tls;
  SSL_CTX* upstream_tls;
  const Identity& identity;
  metrics::Metrics& metrics;
  LoginGuard& guard;          // shared by all workers
  MailboxHistory& mailboxes;  // shared by all workers
};

// What a session needs from whoever runs it (the server of its loop).
class SessionHost {
 public:
  // Keeps object alive until a later loop turn, so nothing is destroyed inside one of
  // its own callbacks.
  virtual void dispose(std::shared_ptr<void> object) = 0;
  // Called by a session once it has closed its client connection.
  virtual void session_finished(Pop3Session* session) = 0;

 protected:
  ~SessionHost() = default;
};

}  // namespace popbridge::proxy
