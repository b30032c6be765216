// SPDX-License-Identifier: Apache-2.0
#include "protocol/jmap/jmap.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "protocol/common/ascii.h"
#include "protocol/common/digest.h"

namespace popbridge::protocol::jmap {
namespace {

using Json = nlohmann::json;

// Exception-free: a document that is not JSON is discarded, and every access below checks
// the type first (nlohmann throws on a wrong one).
Json parse(std::string_view body) { return Json::parse(body, nullptr, false); }

const Json* member(const Json& object, std::string_view key) {
  if (!object.is_object()) {
    return nullptr;
  }
  const auto found = object.find(key);
  return found == object.end() ? nullptr : &*found;
}

std::string string_member(const Json& object, std::string_view key) {
  const Json* value = member(object, key);
  return value != nullptr && value->is_string() ? value->get<std::string>() : std::string();
}

std::optional<std::uint64_t> uint_member(const Json& object, std::string_view key) {
  const Json* value = member(object, key);
  if (value == nullptr || !value->is_number_unsigned()) {
    return std::nullopt;
  }
  return value->get<std::uint64_t>();
}

Failure malformed(std::string description) { return {"malformed", std::move(description)}; }

const Json kUsing = Json::array({std::string(kCoreCapability), std::string(kMailCapability)});

std::string request_text(Json calls) {
  return Json{{"using", kUsing}, {"methodCalls", std::move(calls)}}.dump();
}

// The arguments of the response with this call id, or the failure instead: a
// method-level "error" response, or an answer that is not a JMAP Response.
struct MethodAnswer {
  const Json* arguments = nullptr;
  std::optional<Failure> failure;
};

MethodAnswer find_response(const Json& document, std::string_view name, std::string_view call_id) {
  const Json* responses = member(document, "methodResponses");
  if (responses == nullptr || !responses->is_array()) {
    return {nullptr, malformed("no methodResponses in the answer")};
  }
  for (const Json& response : *responses) {
    if (!response.is_array() || response.size() != 3 || !response[0].is_string() ||
        !response[1].is_object() || !response[2].is_string() ||
        response[2].get<std::string>() != call_id) {
      continue;
    }
    const std::string method = response[0].get<std::string>();
    if (method == "error") {
      std::string type = string_member(response[1], "type");
      return {nullptr, Failure{type.empty() ? "serverFail" : std::move(type),
                               string_member(response[1], "description")}};
    }
    if (method != name) {
      return {nullptr, malformed("answered " + method + " to " + std::string(name))};
    }
    return {&response[1], std::nullopt};
  }
  return {nullptr, malformed("no answer to " + std::string(name))};
}

bool is_unreserved(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

std::string percent_encode(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (is_unreserved(c)) {
      out += c;
    } else {
      const auto byte = static_cast<unsigned char>(c);
      out += '%';
      out += kHex[byte >> 4];
      out += kHex[byte & 0x0f];
    }
  }
  return out;
}

}  // namespace

bool Failure::temporary() const {
  // RFC 8620 section 3.6.2 and the request-level limits: what a later attempt may pass.
  return type == "serverUnavailable" || type == "rateLimit" || type == "tooManyRequests" ||
         type == "urn:ietf:params:jmap:error:limit" || type == "serverPartialFail";
}

std::string Failure::text() const { return description.empty() ? type : type + ": " + description; }

std::optional<Session> read_session(std::string_view body, std::string& error) {
  const Json document = parse(body);
  if (!document.is_object()) {
    error = "the session resource is not a JSON object";
    return std::nullopt;
  }
  const Json* capabilities = member(document, "capabilities");
  if (capabilities == nullptr || member(*capabilities, kMailCapability) == nullptr) {
    error = "the server does not offer JMAP Mail (" + std::string(kMailCapability) + ")";
    return std::nullopt;
  }
  Session session;
  session.api_url = string_member(document, "apiUrl");
  session.download_url = string_member(document, "downloadUrl");
  session.username = string_member(document, "username");
  session.state = string_member(document, "state");
  const Json* primary = member(document, "primaryAccounts");
  session.account_id = primary != nullptr ? string_member(*primary, kMailCapability) : "";
  if (session.api_url.empty() || session.download_url.empty()) {
    error = "the session resource has no apiUrl or downloadUrl";
    return std::nullopt;
  }
  if (session.account_id.empty()) {
    error = "the session resource names no primary mail account";
    return std::nullopt;
  }
  if (session.download_url.find("{blobId}") == std::string::npos) {
    error = "the downloadUrl has no {blobId}";
    return std::nullopt;
  }
  if (const Json* core = member(*capabilities, kCoreCapability)) {
    // Zero would stall every page; a server that says so gets the RFC's smallest sane value.
    session.max_objects_in_get =
        std::max<std::uint64_t>(1, uint_member(*core, "maxObjectsInGet").value_or(500));
    session.max_objects_in_set =
        std::max<std::uint64_t>(1, uint_member(*core, "maxObjectsInSet").value_or(500));
    session.max_calls_in_request =
        std::max<std::uint64_t>(1, uint_member(*core, "maxCallsInRequest").value_or(16));
  }
  return session;
}

std::string download_url(const Session& session, std::string_view blob_id, std::string_view type,
                         std::string_view name) {
  std::string out;
  const std::string& url = session.download_url;
  for (std::size_t i = 0; i < url.size();) {
    const std::size_t open = url.find('{', i);
    if (open == std::string::npos) {
      out.append(url, i);
      break;
    }
    out.append(url, i, open - i);
    const std::size_t close = url.find('}', open);
    if (close == std::string::npos) {
      out.append(url, open);
      break;
    }
    const std::string_view variable(url.data() + open + 1, close - open - 1);
    if (variable == "accountId") {
      out += percent_encode(session.account_id);
    } else if (variable == "blobId") {
      out += percent_encode(blob_id);
    } else if (variable == "type") {
      out += percent_encode(type);
    } else if (variable == "name") {
      out += percent_encode(name);
    }  // an unknown variable expands to nothing, as RFC 6570 says for undefined ones
    i = close + 1;
  }
  return out;
}

namespace {

Json mailbox_get_call(std::string_view account_id) {
  return Json::array({"Mailbox/get",
                      {{"accountId", account_id},
                       {"ids", nullptr},
                       {"properties", Json::array({"id", "name", "role", "parentId"})}},
                      "m"});
}

}  // namespace

std::string mailboxes_request(std::string_view account_id) {
  return request_text(Json::array({mailbox_get_call(account_id)}));
}

MailboxList read_mailboxes(std::string_view body) {
  MailboxList out;
  const Json document = parse(body);
  out.session_state = string_member(document, "sessionState");
  const MethodAnswer answer = find_response(document, "Mailbox/get", "m");
  if (answer.failure) {
    out.failure = answer.failure;
    return out;
  }
  const Json* list = member(*answer.arguments, "list");
  if (list == nullptr || !list->is_array()) {
    out.failure = malformed("Mailbox/get has no list");
    return out;
  }
  for (const Json& entry : *list) {
    Mailbox mailbox{string_member(entry, "id"), string_member(entry, "name"),
                    string_member(entry, "role"), string_member(entry, "parentId")};
    if (!mailbox.id.empty()) {
      out.mailboxes.push_back(std::move(mailbox));
    }
  }
  return out;
}

std::optional<std::string> find_mailbox(const std::vector<Mailbox>& mailboxes,
                                        std::string_view wanted, std::string& error) {
  if (equals_ignoring_ascii_case(wanted, "INBOX")) {
    for (const Mailbox& mailbox : mailboxes) {
      if (mailbox.role == "inbox") {
        return mailbox.id;
      }
    }
    error = "no mailbox has the role inbox";
    return std::nullopt;
  }
  // Walk the path from the top, one name per level.
  std::string parent;
  std::string_view rest = wanted;
  while (true) {
    const std::size_t slash = rest.find('/');
    const std::string_view name = rest.substr(0, slash);
    const Mailbox* match = nullptr;
    for (const Mailbox& mailbox : mailboxes) {
      if (mailbox.parent_id == parent && mailbox.name == name) {
        match = &mailbox;
        break;
      }
    }
    if (match == nullptr) {
      error = "no mailbox called \"" + std::string(wanted) + "\"";
      return std::nullopt;
    }
    if (slash == std::string_view::npos) {
      return match->id;
    }
    parent = match->id;
    rest.remove_prefix(slash + 1);
  }
}

namespace {

// Email/query ("q") and Email/get ("g") of its ids by back-reference.
Json email_page_calls(std::string_view account_id, std::string_view mailbox_id,
                      std::uint64_t position, std::uint64_t limit,
                      std::string_view hidden_keyword) {
  Json filter = {{"inMailbox", mailbox_id}};
  if (!hidden_keyword.empty()) {
    filter["notKeyword"] = hidden_keyword;
  }
  return Json::array(
      {Json::array({"Email/query",
                    {{"accountId", account_id},
                     {"filter", std::move(filter)},
                     {"sort", Json::array({{{"property", "receivedAt"}, {"isAscending", true}}})},
                     {"position", position},
                     {"limit", limit},
                     {"calculateTotal", true}},
                    "q"}),
       Json::array({"Email/get",
                    {{"accountId", account_id},
                     {"#ids", {{"resultOf", "q"}, {"name", "Email/query"}, {"path", "/ids"}}},
                     {"properties", Json::array({"id", "blobId", "size"})}},
                    "g"})});
}

}  // namespace

std::string email_page_request(std::string_view account_id, std::string_view mailbox_id,
                               std::uint64_t position, std::uint64_t limit,
                               std::string_view hidden_keyword) {
  return request_text(email_page_calls(account_id, mailbox_id, position, limit, hidden_keyword));
}

std::string mailboxes_and_email_page_request(std::string_view account_id,
                                             std::string_view mailbox_id, std::uint64_t limit,
                                             std::string_view hidden_keyword) {
  Json calls = email_page_calls(account_id, mailbox_id, 0, limit, hidden_keyword);
  calls.insert(calls.begin(), mailbox_get_call(account_id));
  return request_text(std::move(calls));
}

EmailPage read_email_page(std::string_view body) {
  EmailPage page;
  const Json document = parse(body);
  const MethodAnswer query = find_response(document, "Email/query", "q");
  if (query.failure) {
    page.failure = query.failure;
    return page;
  }
  const Json* ids = member(*query.arguments, "ids");
  if (ids == nullptr || !ids->is_array()) {
    page.failure = malformed("Email/query has no ids");
    return page;
  }
  page.ids = ids->size();
  page.total = uint_member(*query.arguments, "total");
  page.query_state = string_member(*query.arguments, "queryState");
  const MethodAnswer get = find_response(document, "Email/get", "g");
  if (get.failure) {
    page.failure = get.failure;
    return page;
  }
  const Json* list = member(*get.arguments, "list");
  if (list == nullptr || !list->is_array()) {
    page.failure = malformed("Email/get has no list");
    return page;
  }
  std::unordered_map<std::string, Email> found;
  for (const Json& entry : *list) {
    Email email{string_member(entry, "id"), string_member(entry, "blobId"), 0};
    const std::optional<std::uint64_t> size = uint_member(entry, "size");
    if (email.id.empty() || email.blob_id.empty() || !size) {
      page.failure = malformed("Email/get gave an email without id, blobId or size");
      return page;
    }
    email.size = *size;
    found.emplace(email.id, std::move(email));
  }
  // The query's order; an id Email/get no longer found was expunged in between.
  for (const Json& id : *ids) {
    if (!id.is_string()) {
      page.failure = malformed("Email/query gave an id that is not a string");
      return page;
    }
    const auto hit = found.find(id.get<std::string>());
    if (hit != found.end()) {
      page.emails.push_back(std::move(hit->second));
      found.erase(hit);
    }
  }
  return page;
}

std::string email_set_request(std::string_view account_id, const std::vector<std::string>& ids,
                              const Removal& removal) {
  Json arguments = {{"accountId", account_id}};
  if (removal.kind == Removal::Kind::kDestroy) {
    arguments["destroy"] = ids;
  } else {
    Json patch = Json::object();
    if (removal.kind == Removal::Kind::kKeyword) {
      patch["keywords/" + removal.keyword] = true;
    } else {
      patch["mailboxIds/" + removal.from_mailbox] = nullptr;
      patch["mailboxIds/" + removal.to_mailbox] = true;
    }
    Json update = Json::object();
    for (const std::string& id : ids) {
      update[id] = patch;
    }
    arguments["update"] = std::move(update);
  }
  return request_text(Json::array({Json::array({"Email/set", std::move(arguments), "s"})}));
}

SetResult read_email_set(std::string_view body, const Removal& removal) {
  SetResult result;
  const Json document = parse(body);
  const MethodAnswer answer = find_response(document, "Email/set", "s");
  if (answer.failure) {
    result.failure = answer.failure;
    return result;
  }
  const bool destroy = removal.kind == Removal::Kind::kDestroy;
  if (const Json* done = member(*answer.arguments, destroy ? "destroyed" : "updated")) {
    if (destroy && done->is_array()) {
      for (const Json& id : *done) {
        if (id.is_string()) {
          result.done.push_back(id.get<std::string>());
        }
      }
    } else if (!destroy && done->is_object()) {
      for (const auto& [id, value] : done->items()) {
        result.done.push_back(id);
      }
    }
  }
  if (const Json* refused = member(*answer.arguments, destroy ? "notDestroyed" : "notUpdated")) {
    if (refused->is_object()) {
      for (const auto& [id, value] : refused->items()) {
        result.not_done.emplace_back(
            id, Failure{string_member(value, "type"), string_member(value, "description")});
      }
    }
  }
  return result;
}

std::string mailbox_create_request(std::string_view account_id, std::string_view name) {
  return request_text(
      Json::array({Json::array({"Mailbox/set",
                                {{"accountId", account_id},
                                 {"create", {{"folder", {{"name", name}, {"parentId", nullptr}}}}}},
                                "c"})}));
}

MailboxCreated read_mailbox_created(std::string_view body) {
  MailboxCreated out;
  const Json document = parse(body);
  const MethodAnswer answer = find_response(document, "Mailbox/set", "c");
  if (answer.failure) {
    out.failure = answer.failure;
    return out;
  }
  if (const Json* created = member(*answer.arguments, "created")) {
    if (const Json* folder = member(*created, "folder")) {
      out.id = string_member(*folder, "id");
    }
  }
  if (out.id.empty()) {
    const Json* refused = member(*answer.arguments, "notCreated");
    const Json* why = refused != nullptr ? member(*refused, "folder") : nullptr;
    out.failure = why != nullptr
                      ? Failure{string_member(*why, "type"), string_member(*why, "description")}
                      : malformed("Mailbox/set created nothing");
  }
  return out;
}

std::optional<Failure> read_problem(std::string_view body) {
  const Json document = parse(body);
  std::string type = string_member(document, "type");
  if (type.empty()) {
    return std::nullopt;
  }
  std::string detail = string_member(document, "detail");
  if (detail.empty()) {
    detail = string_member(document, "title");
  }
  return Failure{std::move(type), std::move(detail)};
}

std::string uidl_for(std::string_view email_id) {
  const bool usable =
      !email_id.empty() && email_id.size() <= 70 &&
      std::all_of(email_id.begin(), email_id.end(), [](char c) { return c > 0x20 && c < 0x7f; });
  return usable ? std::string(email_id) : sha256_hex(email_id);
}

}  // namespace popbridge::protocol::jmap
