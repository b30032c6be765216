// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/mail_store.h"

#include <iterator>

#include "proxy/mailstore/imap/imap_mail_store.h"
#include "proxy/mailstore/jmap/jmap_mail_store.h"

namespace popbridge::proxy {

std::string_view name(StoreStatus status) {
  static constexpr std::string_view kNames[] = {"ok",        "rejected", "in_use", "temporary",
                                                "permanent", "missing",  "lost"};
  static_assert(std::size(kNames) == static_cast<std::size_t>(StoreStatus::kCount));
  return kNames[static_cast<std::size_t>(status)];
}

std::shared_ptr<LoginPool> make_login_pool(uv_loop_t* loop, const config::Upstream& settings,
                                           metrics::Metrics& metrics,
                                           const HttpProxy& egress_proxy) {
  if (settings.protocol == config::UpstreamProtocol::kJmap) {
    return std::make_shared<JmapWorkerCache>(loop, egress_proxy, settings.remember_session);
  }
  if (settings.login_reuse.idle.count() <= 0) {
    return nullptr;
  }
  return std::make_shared<ImapLoginPool>(loop, settings, metrics);
}

std::shared_ptr<MailStore> make_mail_store(uv_loop_t* loop, const config::Upstream& settings,
                                           SSL_CTX* tls_context, metrics::Metrics& metrics,
                                           MailStore::Observer& observer, LoginPool* logins) {
  if (settings.protocol == config::UpstreamProtocol::kJmap) {
    return std::make_shared<JmapMailStore>(loop, settings, tls_context, metrics, observer,
                                           dynamic_cast<JmapWorkerCache*>(logins));
  }
  return std::make_shared<ImapMailStore>(loop, settings, tls_context, metrics, observer,
                                         dynamic_cast<ImapLoginPool*>(logins));
}

}  // namespace popbridge::proxy
