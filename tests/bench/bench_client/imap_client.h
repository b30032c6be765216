// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/imap/imap_parser.h"
#include "protocol/imap/imap_writer.h"
#include "tests/bench/bench_client/connection.h"
#include "tests/bench/bench_client/digest.h"

namespace popbridge::bench {

// Collects what the benchmark needs from our own response parser: the tagged status
// that ends a command, continuations, and the BODY[] literal.
class ImapHandler : public protocol::ImapEvents {
 public:
  void on_status(const protocol::ImapStatus& status) override {
    if (status.tag == "*") {
      if (status.kind == protocol::ImapStatusKind::kBye) {
        bye_ = std::string(status.text);
      }
      greeted_ = true;
      return;
    }
    tagged_ = true;
    tag_ = std::string(status.tag);
    ok_ = status.kind == protocol::ImapStatusKind::kOk;
    text_ = std::string(status.text);
  }
  void on_continuation(std::string_view) override { continuation_ = true; }
  void on_capability(const std::vector<std::string_view>&) override {}
  void on_exists(std::uint32_t) override {}
  void on_expunge(std::uint32_t) override {}
  void on_fetch_begin(std::uint32_t) override {}
  void on_fetch_uid(std::uint32_t uid) override {
    if (collect_uids_) {
      uids_.push_back(uid);
    }
  }
  void on_fetch_size(std::uint64_t) override {}
  void on_body_begin(std::string_view, std::uint64_t, std::uint64_t size) override {
    literal_size_ = size;
    ++bodies_;
  }
  void on_body_data(std::string_view chunk) override {
    if (digest_ != nullptr) {
      digest_->add(chunk);
    }
  }
  void on_body_end() override {}
  void on_fetch_end() override {}

  void expect(Digest* digest) {
    tagged_ = false;
    continuation_ = false;
    digest_ = digest;
    bodies_ = 0;
  }

  bool greeted_ = false;
  bool tagged_ = false;
  bool continuation_ = false;
  bool ok_ = false;
  std::string tag_;
  std::string text_;
  std::string bye_;
  Digest* digest_ = nullptr;
  std::uint64_t literal_size_ = 0;
  unsigned bodies_ = 0;
  bool collect_uids_ = false;
  std::vector<std::uint32_t> uids_;
};

// The IMAP commands the benchmark sends, written and parsed by our own codecs.
class ImapClient {
 public:
  explicit ImapClient(std::unique_ptr<Stream> stream)
      : stream_(std::move(stream)), parser_(handler_) {}

  void read_greeting();

  // Sends one command built with our own command writer, waiting for the continuation
  // before each synchronising literal, and reads up to its tagged reply.
  void run(const protocol::ImapCommand& command, const char* what, Digest* digest = nullptr);

  // UID FETCH 1:* (UID RFC822.SIZE): the UIDs of the selected mailbox, in order.
  std::vector<std::uint32_t> list_uids();

  std::uint64_t last_literal_size() const { return handler_.literal_size_; }
  unsigned last_bodies() const { return handler_.bodies_; }
  Stream& stream() { return *stream_; }

 private:
  void pump(const char* what);

  std::unique_ptr<Stream> stream_;
  ImapHandler handler_;
  protocol::ImapParser parser_;
  unsigned tag_counter_ = 0;
};

}  // namespace popbridge::bench
