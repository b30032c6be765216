// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/imap_client.h"

#include <algorithm>
#include <cstddef>

#include "tests/bench/bench_client/failure.h"

namespace popbridge::bench {

void ImapClient::read_greeting() {
  while (!handler_.greeted_) {
    pump("the IMAP greeting");
  }
  if (!handler_.bye_.empty()) {
    throw Failure("IMAP server said BYE: " + handler_.bye_);
  }
}

void ImapClient::run(const protocol::ImapCommand& command, const char* what, Digest* digest) {
  const std::string tag = "b" + std::to_string(++tag_counter_);
  const std::vector<std::string> parts = command.render(tag, /*literal_plus=*/false);
  handler_.expect(digest);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) {
      while (!handler_.continuation_ && !handler_.tagged_) {
        pump(what);
      }
      if (handler_.tagged_) {
        break;  // refused before the literal was sent
      }
      handler_.continuation_ = false;
    }
    stream_->write_all(parts[i]);
  }
  while (!handler_.tagged_) {
    pump(what);
  }
  if (handler_.tag_ != tag || !handler_.ok_) {
    throw Failure(std::string(what) + " failed: " + handler_.tag_ + " " + handler_.text_);
  }
}

std::vector<std::uint32_t> ImapClient::list_uids() {
  handler_.uids_.clear();
  handler_.collect_uids_ = true;
  run(protocol::ImapCommand("UID FETCH").raw("1:*").raw("(UID RFC822.SIZE)"), "UID FETCH 1:*");
  handler_.collect_uids_ = false;
  std::vector<std::uint32_t> uids = std::move(handler_.uids_);
  std::sort(uids.begin(), uids.end());
  return uids;
}

void ImapClient::pump(const char* what) {
  if (stream_->buffered().empty()) {
    stream_->fill(what);
  }
  const std::string_view data = stream_->buffered();
  const bool ok = parser_.feed(data);
  stream_->consume_all();
  if (!ok) {
    throw Failure(std::string("IMAP parse error while waiting for ") + what + ": " +
                  parser_.error());
  }
}

}  // namespace popbridge::bench
