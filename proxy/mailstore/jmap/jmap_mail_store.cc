// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/jmap/jmap_mail_store.h"

#include <algorithm>
#include <charconv>

#include "protocol/common/base64.h"
#include "protocol/http/retry_after.h"
#include "proxy/base/log.h"
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
// API answers (a page of ids, the mailbox list) are collected whole; downloads stream.
constexpr std::size_t kMaxApiAnswer = 8 * 1024 * 1024;
// The longest a Retry-After holds logins back, so that a misconfigured server (or a date
// far ahead) does not shut a population out for hours.
constexpr std::chrono::seconds kMaxRetryAfter(15 * 60);

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

metrics::UpstreamError error_kind(HttpError error) {
  switch (error) {
    case HttpError::kTls:
      return metrics::UpstreamError::kTls;
    case HttpError::kTimeout:
      return metrics::UpstreamError::kTimeout;
    case HttpError::kResolve:
    case HttpError::kConnect:
      return metrics::UpstreamError::kConnect;
    default:
      return metrics::UpstreamError::kProtocol;
  }
}

// For a store without a worker cache: its own connections, kept for its own session.
HttpClientOptions own_client_options(SSL_CTX* tls_context) {
  HttpClientOptions options;
  options.tls_context = tls_context;
  options.max_response_body_bytes = kMaxApiAnswer;
  options.max_idle_connections = JmapMailStore::kParallelDownloads;  // read-ahead batches
  return options;
}

}  // namespace

JmapMailStore::JmapMailStore(uv_loop_t* loop, const config::Upstream& settings,
                             SSL_CTX* tls_context, metrics::Metrics& metrics,
                             MailStore::Observer& /*observer*/, JmapWorkerCache* worker_cache)
    : settings_(settings),
      metrics_(metrics),
      worker_cache_(worker_cache),
      own_http_(worker_cache != nullptr
                    ? nullptr
                    : std::make_unique<HttpClient>(loop, own_client_options(tls_context))),
      http_(worker_cache != nullptr ? worker_cache->client(tls_context, kMaxApiAnswer)
                                    : *own_http_),
      later_(loop) {}

void JmapMailStore::later(std::function<void()> then) {
  later_.start(0, [this, then = std::move(then)] {
    if (!closed_) {
      then();
    }
  });
}

HttpRequest JmapMailStore::request_to(std::string method, std::string url, std::string body) const {
  HttpRequest request;
  request.method = std::move(method);
  request.url = std::move(url);
  request.headers = {{"Authorization", std::string(authorization_.view())},
                     {"Accept", "application/json"}};
  if (!body.empty()) {
    request.headers.push_back({"Content-Type", "application/json"});
  }
  request.body = std::move(body);
  // Every call here may be repeated harmlessly: queries read, and destroying ids already
  // destroyed answers notFound, which counts as done.
  request.retry_safe = true;
  request.timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(settings_.command_timeout);
  return request;
}

StoreResult JmapMailStore::http_failure(const HttpResult& result, std::string_view what) {
  if (!result.ok()) {
    metrics_.upstream_error(error_kind(result.error)).Increment();
    return {StoreStatus::kLost, std::string(what) + ": " + std::string(to_string(result.error)) +
                                    " (" + result.error_text + ")"};
  }
  std::string detail = std::string(what) + ": HTTP " + std::to_string(result.status);
  if (const auto problem = jmap::read_problem(result.body)) {
    detail += " " + problem->text();
  }
  if (result.status == 429 || result.status == 503) {
    metrics_.upstream_error(metrics::UpstreamError::kThrottled).Increment();
    if (const auto retry = result.header("retry-after")) {
      detail += ", retry after " + std::string(*retry);
      hold_off(*retry);
    }
    return {StoreStatus::kTemporary, detail};
  }
  if (result.status == 401) {
    return {StoreStatus::kRejected, detail};
  }
  metrics_.upstream_error(metrics::UpstreamError::kRefused).Increment();
  return {result.status >= 500 ? StoreStatus::kTemporary : StoreStatus::kPermanent, detail};
}

void JmapMailStore::hold_off(std::string_view retry_after) const {
  const auto wait =
      protocol::parse_retry_after(retry_after, std::chrono::system_clock::now(), kMaxRetryAfter);
  if (!wait || wait->count() == 0) {
    return;
  }
  UpstreamHoldOff::process_wide().hold(settings_.url, UpstreamHoldOff::Clock::now() + *wait);
  log::warn("upstream_held_back", {{"session", open_request_.session_id},
                                   {"upstream", settings_.url},
                                   {"seconds", static_cast<std::uint64_t>(wait->count())}});
}

StoreResult JmapMailStore::jmap_failure(const jmap::Failure& failure, std::string_view what) const {
  return {failure.temporary() ? StoreStatus::kTemporary : StoreStatus::kPermanent,
          std::string(what) + ": " + failure.text()};
}

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
         if (const std::optional<jmap::Failure> failure = jmap::read_email_page(body).failure) {
           if (failure->temporary()) {
             fail(jmap_failure(*failure, "Email/query"));
           } else {
             afresh("Email/query: " + failure->text());  // a lower maxObjectsInGet, say
           }
           return;
         }
         take_page(0, body);
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

void JmapMailStore::call(std::string body, Answer answer) {
  bytes_sent_ += body.size();
  request_ = http_.request(request_to("POST", api_url_, std::move(body)),
                           [this, answer = std::move(answer)](HttpResult result) {
                             bytes_received_ += result.body.size();
                             if (!result.ok() || result.status != 200) {
                               answer(http_failure(result, "the JMAP API"), {});
                               return;
                             }
                             answer({StoreStatus::kOk, {}}, std::move(result.body));
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
        take_page(position, body);
      });
}

void JmapMailStore::take_page(std::uint64_t position, std::string_view body) {
  jmap::EmailPage page = jmap::read_email_page(body);
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
    // Only a whole open is remembered, and from then on for kKnownFor: the session
    // resource is read again at least that often, whatever the answers' sessionState. A
    // session without a state could never be checked, and one that takes fewer than
    // three calls a request could never be recalled.
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

void JmapMailStore::fetch(std::uint32_t uid, std::uint64_t /*listed_size*/, FetchPart part,
                          MessageSink& sink, Done done) {
  sink_ = &sink;
  fetch_done_ = std::move(done);
  part_ = part;
  uid_ = uid;
  delivered_ = 0;
  begun_ = false;
  enough_ = false;
  if (uid == 0 || uid > emails_.size()) {
    later([this] { fetched({}); });
    return;
  }
  HttpRequest request = download_request(emails_[uid - 1]);
  request.body_receiver = this;
  request_ = http_.request(std::move(request), [this](HttpResult result) { fetched(result); });
}

HttpRequest JmapMailStore::download_request(const jmap::Email& email) const {
  HttpRequest request = request_to(
      "GET", jmap::download_url(session_, email.blob_id, "message/rfc822", email.id + ".eml"));
  request.headers[1].value = "message/rfc822";  // Accept
  return request;
}

bool JmapMailStore::on_response_head(int status, const std::vector<protocol::HttpHeader>& headers) {
  if (status != 200) {
    return false;  // an error page: collected, and reported when complete
  }
  std::optional<std::uint64_t> length;
  if (const auto text = protocol::find_header(headers, "content-length")) {
    std::uint64_t value = 0;
    if (std::from_chars(text->data(), text->data() + text->size(), value).ec == std::errc()) {
      length = value;
    }
  }
  // A blob of another size than listed is there and really of that size: served as it
  // is, its real size in the +OK (the session logs and counts the difference).
  begun_ = true;
  sink_->on_message_begin(part_ == FetchPart::kWhole ? length : std::nullopt);
  return true;
}

bool JmapMailStore::on_body_data(std::string_view data) {
  if (closed_ || sink_ == nullptr) {
    return false;
  }
  bytes_received_ += data.size();
  delivered_ += data.size();
  if (!sink_->on_message_data(data)) {
    enough_ = true;
    return false;
  }
  return true;
}

void JmapMailStore::fetched(const HttpResult& result) {
  Done done = std::move(fetch_done_);
  fetch_done_ = nullptr;
  sink_ = nullptr;
  StoreResult outcome{StoreStatus::kOk, {}};
  if (uid_ == 0 || uid_ > emails_.size()) {
    outcome = {StoreStatus::kMissing, "no such message in the snapshot"};
  } else if (result.error == HttpError::kStopped && enough_) {
    outcome = {StoreStatus::kOk, {}};  // TOP had its lines
  } else if (!result.ok()) {
    // The download broke off: whatever reached the sink is incomplete.
    outcome = http_failure(result, "the download");
  } else if (result.status == 404 && !begun_) {
    log::warn("message_vanished", {{"session", open_request_.session_id}, {"uid", uid_}});
    outcome = {StoreStatus::kMissing, "the server no longer has the message"};
  } else if (result.status != 200 || !result.streamed) {
    outcome = http_failure(result, "the download");
  }
  if (done) {
    done(outcome);
  }
}

void JmapMailStore::keep_alive(Done done) {
  // HTTP keeps no session open: nothing to refresh.
  later([done = std::move(done)] { done({StoreStatus::kOk, {}}); });
}

void JmapMailStore::commit(std::vector<std::uint32_t> deleted, Done done) {
  commit_done_ = std::move(done);
  deleting_.clear();
  for (const std::uint32_t uid : deleted) {
    if (uid >= 1 && uid <= emails_.size()) {
      deleting_.push_back(emails_[uid - 1].id);
    }
  }
  if (deleting_.empty() || settings_.on_delete.action == config::DeleteAction::kKeep) {
    later([this] { committed({StoreStatus::kOk, {}}); });
    return;
  }
  removal_ = {};
  switch (settings_.on_delete.action) {
    case config::DeleteAction::kHide:
      removal_.kind = jmap::Removal::Kind::kKeyword;
      removal_.keyword = settings_.on_delete.keyword;
      break;
    case config::DeleteAction::kMove:
      removal_.kind = jmap::Removal::Kind::kMove;
      removal_.from_mailbox = mailbox_id_;
      commit_move();
      return;
    default:
      break;
  }
  commit_batch(0);
}

void JmapMailStore::commit_move() {
  std::string error;
  if (std::optional<std::string> folder =
          jmap::find_mailbox(mailboxes_, settings_.on_delete.folder, error)) {
    removal_.to_mailbox = std::move(*folder);
    commit_batch(0);
    return;
  }
  // As for IMAP: the folder is made on first use.
  call(jmap::mailbox_create_request(session_.account_id, settings_.on_delete.folder),
       [this](const StoreResult& result, std::string body) {
         if (!result.ok()) {
           committed(result);
           return;
         }
         jmap::MailboxCreated created = jmap::read_mailbox_created(body);
         if (created.failure) {
           log::error("folder_create_failed", {{"session", open_request_.session_id},
                                               {"folder", settings_.on_delete.folder},
                                               {"reason", created.failure->text()}});
           committed(jmap_failure(*created.failure, "Mailbox/set"));
           return;
         }
         log::info("folder_created",
                   {{"session", open_request_.session_id}, {"folder", settings_.on_delete.folder}});
         mailboxes_.push_back({created.id, settings_.on_delete.folder, "", ""});
         removal_.to_mailbox = std::move(created.id);
         commit_batch(0);
       });
}

void JmapMailStore::commit_batch(std::size_t offset) {
  const std::size_t count =
      std::min<std::size_t>(deleting_.size() - offset, session_.max_objects_in_set);
  const std::vector<std::string> batch(
      deleting_.begin() + static_cast<std::ptrdiff_t>(offset),
      deleting_.begin() + static_cast<std::ptrdiff_t>(offset + count));
  call(jmap::email_set_request(session_.account_id, batch, removal_),
       [this, offset, count](const StoreResult& result, std::string body) {
         if (!result.ok()) {
           committed(result);
           return;
         }
         const jmap::SetResult set = jmap::read_email_set(body, removal_);
         if (set.failure) {
           committed(jmap_failure(*set.failure, "Email/set"));
           return;
         }
         std::size_t refused = 0;
         std::string first;
         for (const auto& [id, why] : set.not_done) {
           if (why.type == "notFound") {
             continue;  // another client removed it already: what the client asked for
           }
           if (refused++ == 0) {
             first = id + " " + why.text();
           }
         }
         if (refused > 0) {
           committed({StoreStatus::kPermanent, "Email/set refused " + std::to_string(refused) +
                                                   " of " + std::to_string(count) + " messages (" +
                                                   first + ")"});
           return;
         }
         if (offset + count < deleting_.size()) {
           commit_batch(offset + count);
           return;
         }
         committed({StoreStatus::kOk, {}});
       });
}

void JmapMailStore::committed(const StoreResult& result) {
  Done done = std::move(commit_done_);
  commit_done_ = nullptr;
  if (done) {
    done(result);
  }
}

void JmapMailStore::close(bool graceful) {
  (void)graceful;  // nothing to say goodbye to over HTTP
  closed_ = true;
  request_.cancel();
  batch_.clear();  // cancels the downloads in flight
  batch_sink_ = nullptr;
  batch_done_ = nullptr;
  later_.stop();
  opened_done_ = nullptr;
  fetch_done_ = nullptr;
  commit_done_ = nullptr;
  sink_ = nullptr;
  authorization_.clear();
}

std::optional<bool> JmapMailStore::accepts(UpstreamCredentials::Mechanism mechanism) const {
  (void)mechanism;
  // Any token goes as a Bearer token; whether it is good only the server can say.
  return reached_ ? std::optional<bool>(true) : std::nullopt;
}

std::string JmapMailStore::tls_summary() const {
  return settings_.tls == config::TlsMode::kImplicit ? "https" : "";
}

}  // namespace popbridge::proxy
