// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/jmap/jmap_mail_store.h"

#include <algorithm>
#include <charconv>

#include "protocol/http/retry_after.h"
#include "proxy/base/log.h"
#include "proxy/mailstore/jmap/upstream_hold_off.h"

namespace popbridge::proxy {
namespace {

namespace jmap = protocol::jmap;

// API answers (a page of ids, the mailbox list) are collected whole; downloads stream.
constexpr std::size_t kMaxApiAnswer = 8 * 1024 * 1024;
// The longest a Retry-After holds logins back, so that a misconfigured server (or a date
// far ahead) does not shut a population out for hours.
constexpr std::chrono::seconds kMaxRetryAfter(15 * 60);

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
