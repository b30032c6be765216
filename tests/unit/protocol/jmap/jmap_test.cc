// SPDX-License-Identifier: Apache-2.0
#include "protocol/jmap/jmap.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace popbridge::protocol::jmap {
namespace {

using Json = nlohmann::json;

// Cyrus 3.6's session resource, cut to what matters, with its account id and templates.
const std::string kCyrusSession = R"({
  "capabilities": {
    "urn:ietf:params:jmap:core": {"maxSizeUpload": 1073741824, "maxConcurrentUpload": 5,
      "maxSizeRequest": 10000000, "maxConcurrentRequests": 5, "maxCallsInRequest": 50,
      "maxObjectsInGet": 4096, "maxObjectsInSet": 4096, "collationAlgorithms": []},
    "urn:ietf:params:jmap:mail": {}
  },
  "accounts": {"alice": {"name": "alice", "isPersonal": true, "isReadOnly": false}},
  "primaryAccounts": {"urn:ietf:params:jmap:mail": "alice"},
  "username": "alice",
  "apiUrl": "/jmap/",
  "downloadUrl": "http://127.0.0.1:8080/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
  "uploadUrl": "/jmap/upload/{accountId}/",
  "state": "0"
})";

TEST(JmapSession, ReadsWhatAMailClientNeeds) {
  std::string error;
  const std::optional<Session> session = read_session(kCyrusSession, error);
  ASSERT_TRUE(session) << error;
  EXPECT_EQ(session->api_url, "/jmap/");
  EXPECT_EQ(session->account_id, "alice");
  EXPECT_EQ(session->username, "alice");
  EXPECT_EQ(session->state, "0");
  EXPECT_EQ(session->max_objects_in_get, 4096u);
  EXPECT_EQ(session->max_calls_in_request, 50u);
  EXPECT_EQ(download_url(*session, "G1a/b", "message/rfc822", "1 2.eml"),
            "http://127.0.0.1:8080/jmap/download/alice/G1a%2Fb/1%202.eml?accept=message%2Frfc822");
}

TEST(JmapSession, RefusesWhatIsNotAMailSession) {
  const std::pair<std::string, std::string> cases[] = {
      {"not json", "not a JSON object"},
      {"[]", "not a JSON object"},
      {R"({"capabilities": {"urn:ietf:params:jmap:core": {}}, "apiUrl": "/a",
           "downloadUrl": "/d/{blobId}", "primaryAccounts": {}})",
       "does not offer JMAP Mail"},
      {R"({"capabilities": {"urn:ietf:params:jmap:mail": {}}, "downloadUrl": "/d/{blobId}",
           "primaryAccounts": {"urn:ietf:params:jmap:mail": "a"}})",
       "no apiUrl"},
      {R"({"capabilities": {"urn:ietf:params:jmap:mail": {}}, "apiUrl": "/a",
           "downloadUrl": "/d/{blobId}", "primaryAccounts": {}})",
       "no primary mail account"},
      {R"({"capabilities": {"urn:ietf:params:jmap:mail": {}}, "apiUrl": "/a",
           "downloadUrl": "/d/x", "primaryAccounts": {"urn:ietf:params:jmap:mail": "a"}})",
       "no {blobId}"},
  };
  for (const auto& [body, why] : cases) {
    std::string error;
    EXPECT_FALSE(read_session(body, error)) << body;
    EXPECT_NE(error.find(why), std::string::npos) << error;
  }
  // Limits of the wrong type or zero fall back to sane values.
  std::string error;
  const auto session = read_session(
      R"({"capabilities": {"urn:ietf:params:jmap:mail": {}, "urn:ietf:params:jmap:core":
          {"maxObjectsInGet": 0, "maxObjectsInSet": "many"}}, "apiUrl": "/a",
          "downloadUrl": "/d/{blobId}", "primaryAccounts": {"urn:ietf:params:jmap:mail": "a"}})",
      error);
  ASSERT_TRUE(session) << error;
  EXPECT_EQ(session->max_objects_in_get, 1u);
  EXPECT_EQ(session->max_objects_in_set, 500u);
}

TEST(JmapMailboxes, FindsTheInboxByRoleAndOthersByPath) {
  const Json request = Json::parse(mailboxes_request("alice"));
  EXPECT_EQ(request["using"][1], "urn:ietf:params:jmap:mail");
  EXPECT_EQ(request["methodCalls"][0][0], "Mailbox/get");
  EXPECT_EQ(request["methodCalls"][0][1]["accountId"], "alice");
  EXPECT_TRUE(request["methodCalls"][0][1]["ids"].is_null());

  const MailboxList list = read_mailboxes(R"({"methodResponses": [["Mailbox/get", {"list": [
      {"id": "m1", "name": "Inbox", "role": "inbox", "parentId": null},
      {"id": "m2", "name": "Work", "role": null, "parentId": null},
      {"id": "m3", "name": "Tickets", "role": null, "parentId": "m2"},
      {"id": "m4", "name": "Tickets", "role": null, "parentId": null}]}, "m"]]})");
  ASSERT_FALSE(list.failure);
  ASSERT_EQ(list.mailboxes.size(), 4u);
  std::string error;
  EXPECT_EQ(find_mailbox(list.mailboxes, "inbox", error), "m1");
  EXPECT_EQ(find_mailbox(list.mailboxes, "Work/Tickets", error), "m3");
  EXPECT_EQ(find_mailbox(list.mailboxes, "Tickets", error), "m4");
  EXPECT_FALSE(find_mailbox(list.mailboxes, "Work/None", error));
  EXPECT_EQ(error, "no mailbox called \"Work/None\"");
  EXPECT_FALSE(find_mailbox({}, "INBOX", error));
  EXPECT_EQ(error, "no mailbox has the role inbox");
}

TEST(JmapMailboxes, AMethodErrorIsAFailure) {
  const MailboxList list =
      read_mailboxes(R"({"methodResponses": [["error", {"type": "accountNotFound"}, "m"]]})");
  ASSERT_TRUE(list.failure);
  EXPECT_EQ(list.failure->type, "accountNotFound");
  EXPECT_FALSE(list.failure->temporary());
  const MailboxList busy = read_mailboxes(
      R"({"methodResponses": [["error", {"type": "serverUnavailable", "description": "x"}, "m"]]})");
  ASSERT_TRUE(busy.failure);
  EXPECT_TRUE(busy.failure->temporary());
  EXPECT_EQ(busy.failure->text(), "serverUnavailable: x");
  EXPECT_EQ(read_mailboxes("<html>").failure->type, "malformed");
  EXPECT_EQ(read_mailboxes(R"({"methodResponses": [["Mailbox/get", {}, "m"]]})").failure->type,
            "malformed");
}

TEST(JmapEmails, APageIsAQueryAndAGetByBackReference) {
  const Json request = Json::parse(email_page_request("alice", "m1", 500, 250, ""));
  const Json& query = request["methodCalls"][0];
  EXPECT_EQ(query[0], "Email/query");
  EXPECT_EQ(query[1]["filter"], Json({{"inMailbox", "m1"}}));
  EXPECT_EQ(query[1]["sort"][0]["property"], "receivedAt");
  EXPECT_EQ(query[1]["sort"][0]["isAscending"], true);
  EXPECT_EQ(query[1]["position"], 500);
  EXPECT_EQ(query[1]["limit"], 250);
  const Json& get = request["methodCalls"][1];
  EXPECT_EQ(get[0], "Email/get");
  EXPECT_EQ(get[1]["#ids"],
            Json({{"resultOf", query[2]}, {"name", "Email/query"}, {"path", "/ids"}}));
  EXPECT_EQ(get[1]["properties"], Json({"id", "blobId", "size"}));
  const Json hidden = Json::parse(email_page_request("alice", "m1", 0, 10, "$POP3Deleted"));
  EXPECT_EQ(hidden["methodCalls"][0][1]["filter"]["notKeyword"], "$POP3Deleted");
}

TEST(JmapEmails, TheMailboxesAndTheFirstPageGoInOneRequestAndReadApart) {
  const Json request =
      Json::parse(mailboxes_and_email_page_request("alice", "m1", 250, "$POP3Deleted"));
  const Json& calls = request["methodCalls"];
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0], Json::parse(mailboxes_request("alice"))["methodCalls"][0]);
  EXPECT_EQ(Json(calls.begin() + 1, calls.end()),
            Json::parse(email_page_request("alice", "m1", 0, 250, "$POP3Deleted"))["methodCalls"]);
  const std::string answer = R"({"methodResponses": [
      ["Mailbox/get", {"list": [{"id": "m1", "name": "Inbox", "role": "inbox"}]}, "m"],
      ["Email/query", {"ids": ["Ma"], "position": 0, "total": 1, "queryState": "s1"}, "q"],
      ["Email/get", {"list": [{"id": "Ma", "blobId": "Ga", "size": 10}]}, "g"]]})";
  const MailboxList list = read_mailboxes(answer);
  ASSERT_FALSE(list.failure) << list.failure->text();
  EXPECT_EQ(list.session_state, "");
  EXPECT_EQ(read_mailboxes(R"({"methodResponses": [["Mailbox/get", {"list": []}, "m"]],
                               "sessionState": "st7"})")
                .session_state,
            "st7");
  ASSERT_EQ(list.mailboxes.size(), 1u);
  EXPECT_EQ(list.mailboxes[0].id, "m1");
  const EmailPage page = read_email_page(answer);
  ASSERT_FALSE(page.failure) << page.failure->text();
  ASSERT_EQ(page.emails.size(), 1u);
  EXPECT_EQ(page.emails[0].blob_id, "Ga");
}

TEST(JmapEmails, ReadsAPageInTheQuerysOrder) {
  // Email/get may list in any order, and leaves out an email expunged in between.
  const EmailPage page = read_email_page(R"({"methodResponses": [
      ["Email/query", {"ids": ["Ma", "Mb", "Mc"], "position": 0, "total": 7,
                       "queryState": "s1"}, "q"],
      ["Email/get", {"list": [{"id": "Mc", "blobId": "Gc", "size": 30},
                              {"id": "Ma", "blobId": "Ga", "size": 10}],
                     "notFound": ["Mb"]}, "g"]]})");
  ASSERT_FALSE(page.failure) << page.failure->text();
  EXPECT_EQ(page.ids, 3u);
  EXPECT_EQ(page.total, 7u);
  EXPECT_EQ(page.query_state, "s1");
  ASSERT_EQ(page.emails.size(), 2u);
  EXPECT_EQ(page.emails[0].id, "Ma");
  EXPECT_EQ(page.emails[0].blob_id, "Ga");
  EXPECT_EQ(page.emails[0].size, 10u);
  EXPECT_EQ(page.emails[1].id, "Mc");

  const EmailPage no_size = read_email_page(R"({"methodResponses": [
      ["Email/query", {"ids": ["Ma"]}, "q"],
      ["Email/get", {"list": [{"id": "Ma", "blobId": "Ga", "size": -1}]}, "g"]]})");
  ASSERT_TRUE(no_size.failure);
  EXPECT_EQ(no_size.failure->type, "malformed");
  const EmailPage refused = read_email_page(R"({"methodResponses": [
      ["error", {"type": "unsupportedSort"}, "q"], ["error", {"type": "invalidResultReference"}, "g"]]})");
  ASSERT_TRUE(refused.failure);
  EXPECT_EQ(refused.failure->type, "unsupportedSort");
}

TEST(JmapEmails, SetDestroysOrMarksAndReadsWhatFailed) {
  const Json destroy = Json::parse(email_set_request("alice", {"Ma", "Mb"}, Removal{}));
  EXPECT_EQ(destroy["methodCalls"][0][0], "Email/set");
  EXPECT_EQ(destroy["methodCalls"][0][1]["destroy"], Json({"Ma", "Mb"}));
  const SetResult destroyed = read_email_set(R"({"methodResponses": [["Email/set",
      {"destroyed": ["Ma"], "notDestroyed": {"Mb": {"type": "notFound"}}}, "s"]]})",
                                             Removal{});
  ASSERT_FALSE(destroyed.failure);
  EXPECT_EQ(destroyed.done, std::vector<std::string>{"Ma"});
  ASSERT_EQ(destroyed.not_done.size(), 1u);
  EXPECT_EQ(destroyed.not_done[0].first, "Mb");
  EXPECT_EQ(destroyed.not_done[0].second.type, "notFound");

  const Removal hide{Removal::Kind::kKeyword, "$POP3Deleted", "", ""};
  const Json mark = Json::parse(email_set_request("alice", {"Ma"}, hide));
  EXPECT_EQ(mark["methodCalls"][0][1]["update"], Json({{"Ma", {{"keywords/$POP3Deleted", true}}}}));
  const SetResult marked = read_email_set(R"({"methodResponses": [["Email/set",
      {"updated": {"Ma": null}, "notUpdated": {}}, "s"]]})",
                                          hide);
  EXPECT_EQ(marked.done, std::vector<std::string>{"Ma"});
  EXPECT_TRUE(marked.not_done.empty());
}

TEST(JmapEmails, AMoveIsOnePatchOfBothMailboxes) {
  const Removal move{Removal::Kind::kMove, "", "m1", "m9"};
  const Json request = Json::parse(email_set_request("alice", {"Ma", "Mb"}, move));
  const Json patch = {{"mailboxIds/m1", nullptr}, {"mailboxIds/m9", true}};
  EXPECT_EQ(request["methodCalls"][0][1]["update"], Json({{"Ma", patch}, {"Mb", patch}}));
  const SetResult moved = read_email_set(R"({"methodResponses": [["Email/set",
      {"updated": {"Ma": null}, "notUpdated": {"Mb": {"type": "forbidden"}}}, "s"]]})",
                                         move);
  EXPECT_EQ(moved.done, std::vector<std::string>{"Ma"});
  ASSERT_EQ(moved.not_done.size(), 1u);
  EXPECT_EQ(moved.not_done[0].second.type, "forbidden");
}

TEST(JmapMailboxes, CreatesAFolderAndReadsItsIdOrWhyNot) {
  const Json request = Json::parse(mailbox_create_request("alice", "POP3 Deleted"));
  EXPECT_EQ(request["methodCalls"][0][0], "Mailbox/set");
  EXPECT_EQ(request["methodCalls"][0][1]["create"]["folder"]["name"], "POP3 Deleted");
  const MailboxCreated created = read_mailbox_created(R"({"methodResponses": [["Mailbox/set",
      {"created": {"folder": {"id": "m9"}}}, "c"]]})");
  EXPECT_EQ(created.id, "m9");
  EXPECT_FALSE(created.failure);
  const MailboxCreated refused = read_mailbox_created(R"({"methodResponses": [["Mailbox/set",
      {"notCreated": {"folder": {"type": "forbidden"}}}, "c"]]})");
  EXPECT_TRUE(refused.id.empty());
  ASSERT_TRUE(refused.failure);
  EXPECT_EQ(refused.failure->type, "forbidden");
}

TEST(JmapProblem, ReadsARequestLevelProblem) {
  const auto problem = read_problem(R"({"type": "urn:ietf:params:jmap:error:limit",
      "limit": "maxSizeRequest", "status": 400, "detail": "too big"})");
  ASSERT_TRUE(problem);
  EXPECT_TRUE(problem->temporary());
  EXPECT_EQ(problem->text(), "urn:ietf:params:jmap:error:limit: too big");
  EXPECT_FALSE(read_problem("<html>Bad Request</html>"));
}

TEST(JmapUidl, TheEmailIdOrItsHashWhenTooLong) {
  EXPECT_EQ(uidl_for("M1f6c1e62a4b2f8e1d2a9c3b4"), "M1f6c1e62a4b2f8e1d2a9c3b4");
  const std::string long_id(71, 'a');
  const std::string hashed = uidl_for(long_id);
  EXPECT_EQ(hashed.size(), 64u);
  EXPECT_EQ(hashed, uidl_for(long_id));
  EXPECT_NE(hashed, uidl_for(std::string(72, 'a')));
  EXPECT_EQ(uidl_for(std::string(70, 'a')), std::string(70, 'a'));
  EXPECT_EQ(uidl_for("a b").size(), 64u);  // a space is no UIDL character
}

}  // namespace
}  // namespace popbridge::protocol::jmap
