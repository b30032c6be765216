// SPDX-License-Identifier: Apache-2.0
// Every reader of a JMAP server's answers, on the same bytes: none may crash, throw or
// hand back an email it did not check.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/jmap/jmap.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace popbridge::protocol::jmap;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  std::string error;
  if (const auto session = read_session(body, error)) {
    if (session->api_url.empty() || session->account_id.empty() ||
        session->max_objects_in_get == 0) {
      std::abort();
    }
    (void)download_url(*session, "G/1", "message/rfc822", "x");
  } else if (error.empty()) {
    std::abort();
  }
  const MailboxList mailboxes = read_mailboxes(body);
  (void)find_mailbox(mailboxes.mailboxes, "A/B", error);
  const EmailPage page = read_email_page(body);
  if (page.emails.size() > page.ids) {
    std::abort();
  }
  for (const Email& email : page.emails) {
    if (email.id.empty() || email.blob_id.empty()) {
      std::abort();
    }
  }
  (void)read_email_set(body, Removal{});
  (void)read_email_set(body, Removal{Removal::Kind::kKeyword, "$k", "", ""});
  const MailboxCreated created = read_mailbox_created(body);
  if (created.id.empty() != created.failure.has_value()) {
    std::abort();
  }
  (void)read_problem(body);
  const std::string uidl = uidl_for(body);
  if (uidl.empty() || uidl.size() > 70) {
    std::abort();
  }
  return 0;
}
