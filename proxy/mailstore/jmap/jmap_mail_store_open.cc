// SPDX-License-Identifier: Apache-2.0
// JmapMailStore::open: the session resource, the mailbox and the snapshot's pages, or what
// the worker cache recalled of them, checked in one request.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "protocol/common/base64.h"
#include "proxy/base/log.h"
#include "proxy/mailstore/jmap/jmap_mail_store.h"
#include "proxy/mailstore/jmap/upstream_hold_off.h"

namespace popbridge::proxy {
namespace {

namespace jmap = protocol::jmap;

// Redirects of the session resource followed (/.well-known/jmap usually redirects once).
constexpr int kMaxRedirects = 5;
// Pages re-read from the start because the mailbox changed meanwhile, before giving up.
constexpr int kMaxRestarts = 3;
// One page's Email/get: bounded whatever the server allows, so an answer stays small.
constexpr std::uint64_t kMaxPage = 1024;

// The Authorization header's value, built so that no copy of the password or token is
// left behind in freed memory (each buffer is sized once, then wiped).
protocol::Secret authorization_for(const UpstreamCredentials& credentials) {
  std::string value;
  if (credentials.mechanism == UpstreamCredentials::Mechanism::kPassword) {
    // RFC 7617: user-id ":" password, UTF-8, in base64.
    std::string pair;
    pair.reserve(credentials.user.size() + 1 + credentials.secret.size());
    pair.append(credentials.user).append(1, ':').append(credentials.secret.view());
    std::string encoded = protocol::base64_encode(pair);
    protocol::wipe(pair.data(), pair.size());
    value.reserve(6 + encoded.size());
    value.append("Basic ").append(encoded);
    protocol::wipe(encoded.data(), encoded.size());
  } else {
    value.reserve(7 + credentials.secret.size());
    value.append("Bearer ").append(credentials.secret.view());
  }
  protocol::Secret secret(value);
  protocol::wipe(value.data(), value.size());
  return secret;
}

// A stable number for the mailbox, so that a mailbox deleted and made again under the
// same name is noticed as a UIDVALIDITY change would be (FNV-1a, never 0).
std::uint32_t mailbox_validity(std::string_view account, std::string_view mailbox) {
  std::uint32_t hash = 2166136261u;
  for (const char c : std::string(account) + '\n' + std::string(mailbox)) {
    hash = (hash ^ static_cast<unsigned char>(c)) * 16777619u;
  }
  return hash == 0 ? 1 : hash;
}

bool same_origin(std::string_view from, std::string_view to) {
  std::string error;
  const std::optional<HttpUrl> a = parse_http_url(from, error);
  const std::optional<HttpUrl> b = parse_http_url(to, error);
  return a && b && a->origin() == b->origin();
}

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

}  // namespace

void JmapMailStore::open(OpenRequest request, Opened done) {
  open_request_ = std::move(request);
  opened_done_ = std::move(done);
  started_ns_ = uv_hrtime();
  if (const auto wait =
          UpstreamHoldOff::process_wide().remaining(settings_.url, UpstreamHoldOff::Clock::now())) {
    // The server asked for a pause (Retry-After): it is not asked again until then.
    later([this, wait = *wait] {
      opened({StoreStatus::kTemporary, "held back: the server asked to wait (Retry-After), " +
                                           std::to_string(wait.count()) + " s more"});
    });
    return;
  }
  authorization_ = authorization_for(open_request_.credentials);
  if (worker_cache_ != nullptr) {
    known_key_ = worker_cache_->key_for(settings_.url, wanted_mailbox(), authorization_);
    if (known_key_) {
      if (const JmapKnownMailbox* known = worker_cache_->recall(*known_key_)) {
        session_url_ = known->session_url;
        session_ = known->session;
        api_url_ = known->api_url;
        mailbox_id_ = known->mailbox_id;
        open_known();
        return;
      }
    }
  }
  get_session(settings_.url, kMaxRedirects);
}

void JmapMailStore::open_known() {
  recalled_ = true;
  const std::uint64_t limit = std::min(session_.max_objects_in_get, kMaxPage);
  call(jmap::mailboxes_and_email_page_request(session_.account_id, mailbox_id_, limit,
                                              hidden_keyword()),
       [this](const StoreResult& result, std::string body) {
         reached_ = reached_ || result.status != StoreStatus::kLost;
         const auto afresh = [this](std::string_view why) {
           log::debug("jmap_open_afresh",
                      {{"session", open_request_.session_id}, {"reason", std::string(why)}});
           worker_cache_->forget(*known_key_);
           recalled_ = false;
           mailboxes_.clear();
           get_session(settings_.url, kMaxRedirects);
         };
         const auto fail = [this](const StoreResult& failure) {
           // Refused credentials, or a server in trouble: a fresh open would hear the same,
           // and more requests are the last thing a struggling server needs. What was
           // remembered stays true unless the credentials were refused.
           if (failure.status == StoreStatus::kRejected) {
             worker_cache_->forget(*known_key_);
           }
           opened(failure);
         };
         if (!result.ok()) {
           if (result.status == StoreStatus::kPermanent) {
             afresh(result.detail);  // a moved API, say: the session resource tells
           } else {
             fail(result);
           }
           return;
         }
         jmap::MailboxList list = jmap::read_mailboxes(body);
         if (!list.session_state.empty() && list.session_state != session_.state) {
           // RFC 8620 section 3.4: the session resource changed (URLs, accounts, limits).
           afresh("the session state changed");
           return;
         }
         if (list.failure) {
           if (list.failure->temporary()) {
             fail(jmap_failure(*list.failure, "Mailbox/get"));
           } else {
             afresh("Mailbox/get: " + list.failure->text());
           }
           return;
         }
         mailboxes_ = std::move(list.mailboxes);
         std::string error;
         const std::optional<std::string> id =
             jmap::find_mailbox(mailboxes_, wanted_mailbox(), error);
         if (!id) {
           afresh(error);
           return;
         }
         if (*id != mailbox_id_) {
           // Made again under the same name: the page was of the old one. The next open
           // is whole again.
           worker_cache_->forget(*known_key_);
           mailbox_id_ = *id;
           read_page(0);
           return;
         }
         jmap::EmailPage page = jmap::read_email_page(body);
         if (page.failure) {
           if (page.failure->temporary()) {
             fail(jmap_failure(*page.failure, "Email/query"));
           } else {
             afresh("Email/query: " + page.failure->text());  // a lower maxObjectsInGet, say
           }
           return;
         }
         take_page(0, std::move(page));
       });
}

void JmapMailStore::get_session(std::string url, int redirects_left) {
  session_url_ = url;
  request_ =
      http_.request(request_to("GET", std::move(url)), [this, redirects_left](HttpResult result) {
        if (!result.ok()) {
          metrics_.upstream_connect_error.Increment();
          opened(http_failure(result, "the session resource"));
          return;
        }
        reached_ = true;
        if (is_redirect(result.status) && result.header("location") && redirects_left > 0) {
          std::string next = resolve_url(session_url_, *result.header("location"));
          if (!same_origin(session_url_, next)) {
            // The credentials go with the request: only to the origin the operator named.
            // (A redirect from https to http is another origin too.)
            opened({StoreStatus::kPermanent,
                    "the session resource redirects to another origin (" + next +
                        "); set upstream.url to that address if it is trusted"});
            return;
          }
          get_session(std::move(next), redirects_left - 1);
          return;
        }
        if (result.status != 200) {
          opened(http_failure(result, "the session resource"));
          return;
        }
        metrics_.upstream_connect_ok.Increment();
        metrics_.upstream_connect_duration.Observe(static_cast<double>(uv_hrtime() - started_ns_) /
                                                   1e9);
        std::string error;
        std::optional<jmap::Session> session = jmap::read_session(result.body, error);
        if (!session) {
          opened({StoreStatus::kPermanent, "the session resource: " + error});
          return;
        }
        session_ = std::move(*session);
        api_url_ = resolve_url(session_url_, session_.api_url);
        session_.download_url = resolve_url(session_url_, session_.download_url);
        read_mailboxes();
      });
}
void JmapMailStore::read_mailboxes() {
  call(jmap::mailboxes_request(session_.account_id),
       [this](const StoreResult& result, std::string body) {
         if (!result.ok()) {
           opened(result);
           return;
         }
         jmap::MailboxList list = jmap::read_mailboxes(body);
         if (list.failure) {
           opened(jmap_failure(*list.failure, "Mailbox/get"));
           return;
         }
         mailboxes_ = std::move(list.mailboxes);
         std::string error;
         std::optional<std::string> id = jmap::find_mailbox(mailboxes_, wanted_mailbox(), error);
         if (!id) {
           log::error("mailbox_unavailable", {{"session", open_request_.session_id},
                                              {"mailbox", std::string(wanted_mailbox())},
                                              {"reason", error}});
           opened({StoreStatus::kPermanent, error});
           return;
         }
         mailbox_id_ = std::move(*id);
         read_page(0);
       });
}

void JmapMailStore::read_page(std::uint64_t position) {
  const std::uint64_t limit = std::min(session_.max_objects_in_get, kMaxPage);
  call(
      jmap::email_page_request(session_.account_id, mailbox_id_, position, limit, hidden_keyword()),
      [this, position](const StoreResult& result, std::string body) {
        if (!result.ok()) {
          opened(result);
          return;
        }
        take_page(position, jmap::read_email_page(body));
      });
}

void JmapMailStore::take_page(std::uint64_t position, protocol::jmap::EmailPage page) {
  if (page.failure) {
    opened(jmap_failure(*page.failure, "Email/query"));
    return;
  }
  if (position == 0) {
    query_state_ = page.query_state;
  } else if (page.query_state != query_state_) {
    // The mailbox changed between pages: positions moved, so read it again whole.
    if (++restarts_ > kMaxRestarts) {
      opened({StoreStatus::kTemporary, "the mailbox kept changing while it was read"});
      return;
    }
    emails_.clear();
    read_page(0);
    return;
  }
  for (jmap::Email& email : page.emails) {
    emails_.push_back(std::move(email));
  }
  const std::uint64_t next = position + page.ids;
  const bool more = page.total ? next < *page.total : page.ids > 0;
  if (more && page.ids > 0) {
    read_page(next);
    return;
  }
  opened({StoreStatus::kOk, {}});
}

void JmapMailStore::opened(const StoreResult& result) {
  Opened done = std::move(opened_done_);
  opened_done_ = nullptr;
  StoreSnapshot snapshot;
  if (!result.ok() && result.status != StoreStatus::kRejected) {
    // The client hears only [SYS/TEMP] or [SYS/PERM]; the operator needs the server's why.
    log::warn("upstream_unavailable", {{"session", open_request_.session_id},
                                       {"status", name(result.status)},
                                       {"reason", result.detail}});
  }
  if (result.ok()) {
    opened_ok_ = true;
    if (recalled_) {
      metrics_.upstream_logins_reused.Increment();
    }
    // Only a whole open is remembered, and for upstream.remember_session from then on:
    // the session resource is read again at least that often, whatever the answers'
    // sessionState. A session without a state could never be checked, and one that
    // takes fewer than three calls a request could never be recalled.
    if (worker_cache_ != nullptr && known_key_ && !recalled_ && !session_.state.empty() &&
        session_.max_calls_in_request >= 3) {
      worker_cache_->remember(*known_key_, {session_url_, session_, api_url_, mailbox_id_});
    }
    snapshot.uidvalidity = mailbox_validity(session_.account_id, mailbox_id_);
    snapshot.messages.reserve(emails_.size());
    snapshot.uidls.reserve(emails_.size());
    for (std::size_t i = 0; i < emails_.size(); ++i) {
      snapshot.messages.push_back({static_cast<std::uint32_t>(i + 1), emails_[i].size});
      snapshot.uidls.push_back(jmap::uidl_for(emails_[i].id));
    }
  }
  if (done) {
    done(result, std::move(snapshot));
  }
}

}  // namespace popbridge::proxy
