// SPDX-License-Identifier: Apache-2.0
#pragma once

// What popbridge says to a JMAP mail server (RFC 8620, RFC 8621) and reads from its
// answers: the session resource, the mailbox list, the snapshot's pages of Email ids,
// blob ids and sizes, and Email/set for the UPDATE state. Pure: JSON text in, values
// out; the HTTP exchanges are the mail store's.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace popbridge::protocol::jmap {

inline constexpr std::string_view kCoreCapability = "urn:ietf:params:jmap:core";
inline constexpr std::string_view kMailCapability = "urn:ietf:params:jmap:mail";

// What a server refused, from a method's "error" response or a request-level problem
// (RFC 8620 sections 3.6.1 and 3.6.2); "malformed" when its answer could not be read.
struct Failure {
  std::string type;  // "serverUnavailable", "forbidden", "notFound", ...
  std::string description;
  // Whether trying again later may succeed (serverUnavailable, rateLimit, ...).
  bool temporary() const;
  std::string text() const;  // for logs: "type: description"
};

// The JMAP Session resource (RFC 8620 section 2), as far as a mail client needs it.
struct Session {
  std::string api_url;
  std::string download_url;  // an RFC 6570 template: {accountId} {blobId} {type} {name}
  std::string account_id;    // the primary account for mail
  std::string username;
  std::string state;  // changes when anything above does (every API answer carries it)
  std::uint64_t max_objects_in_get = 500;
  std::uint64_t max_objects_in_set = 500;
  std::uint64_t max_calls_in_request = 16;
};
// nullopt, with why in error, for anything that is not a usable mail session.
std::optional<Session> read_session(std::string_view body, std::string& error);

// The downloadUrl template filled in, each value percent-encoded (RFC 6570 level 1).
std::string download_url(const Session& session, std::string_view blob_id, std::string_view type,
                         std::string_view name);

struct Mailbox {
  std::string id;
  std::string name;
  std::string role;       // "inbox", "archive", ... or empty
  std::string parent_id;  // empty at the top
};
// Mailbox/get for every mailbox of the account.
std::string mailboxes_request(std::string_view account_id);
struct MailboxList {
  std::vector<Mailbox> mailboxes;
  std::optional<Failure> failure;
  std::string session_state;  // the answer's sessionState: Session::state as it is now
};
MailboxList read_mailboxes(std::string_view body);
// The id of the mailbox called wanted: "INBOX" (any case) is the one with role inbox,
// otherwise a name, or a path of names separated by '/'. nullopt, with why in error.
std::optional<std::string> find_mailbox(const std::vector<Mailbox>& mailboxes,
                                        std::string_view wanted, std::string& error);

struct Email {
  std::string id;
  std::string blob_id;
  std::uint64_t size = 0;
};
// One page of the snapshot: Email/query over the mailbox, oldest first (receivedAt), and
// Email/get of that page's ids by back-reference, in one request. Messages carrying
// hidden_keyword (on_delete: hide) are left out.
std::string email_page_request(std::string_view account_id, std::string_view mailbox_id,
                               std::uint64_t position, std::uint64_t limit,
                               std::string_view hidden_keyword);
struct EmailPage {
  std::vector<Email> emails;  // in the query's order; ids Email/get no longer found left out
  std::size_t ids = 0;        // how many ids the query gave (the next page starts after them)
  std::optional<std::uint64_t> total;
  std::string query_state;  // changes when the mailbox does
  std::optional<Failure> failure;
};
EmailPage read_email_page(std::string_view body);
// The mailboxes and the first page in one request, for a mailbox whose id an earlier
// session found: the answer reads with both read_mailboxes() and read_email_page(), and
// the page counts only if the mailbox of that name still has that id.
std::string mailboxes_and_email_page_request(std::string_view account_id,
                                             std::string_view mailbox_id, std::uint64_t limit,
                                             std::string_view hidden_keyword);

// What Email/set does to the messages a POP3 client deleted (upstream.on_delete).
struct Removal {
  enum class Kind { kDestroy, kKeyword, kMove };
  Kind kind = Kind::kDestroy;
  std::string keyword;       // kKeyword: set on them
  std::string from_mailbox;  // kMove: taken out of this mailbox ...
  std::string to_mailbox;    // ... and put into this one, in one patch
};
std::string email_set_request(std::string_view account_id, const std::vector<std::string>& ids,
                              const Removal& removal);
struct SetResult {
  std::vector<std::string> done;                          // destroyed or updated
  std::vector<std::pair<std::string, Failure>> not_done;  // with why
  std::optional<Failure> failure;                         // the whole method failed
};
SetResult read_email_set(std::string_view body, const Removal& removal);

// Mailbox/set creating a mailbox at the top level (on_delete: move to a folder not there).
std::string mailbox_create_request(std::string_view account_id, std::string_view name);
struct MailboxCreated {
  std::string id;  // empty on failure
  std::optional<Failure> failure;
};
MailboxCreated read_mailbox_created(std::string_view body);

// A request-level problem (application/problem+json, RFC 7807), as a server answers a
// request it refused as a whole; nullopt when the body is not one.
std::optional<Failure> read_problem(std::string_view body);

// The POP3 UIDL for an Email id: the id itself (JMAP ids are URL-safe base64 characters,
// all valid in a UIDL) when it fits RFC 1939's 70 characters, else its SHA-256 in hex.
std::string uidl_for(std::string_view email_id);

}  // namespace popbridge::protocol::jmap
