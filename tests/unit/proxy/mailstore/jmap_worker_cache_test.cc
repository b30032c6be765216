// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/jmap/jmap_worker_cache.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <string>

namespace popbridge::proxy {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;
using Clock = JmapWorkerCache::Clock;

const Clock::time_point kStart = Clock::time_point(seconds(1000));
const Clock::duration kKnownFor = minutes(15);  // upstream.remember_session's default

class JmapWorkerCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  static JmapKnownMailbox known(std::string mailbox_id) {
    JmapKnownMailbox known;
    known.session_url = "https://jmap.example/jmap/";
    known.api_url = "https://jmap.example/jmap/api/";
    known.mailbox_id = std::move(mailbox_id);
    return known;
  }

  uv_loop_t loop_{};
};

TEST_F(JmapWorkerCacheTest, TheKeyTakesTheUrlTheMailboxAndTheWholeCredential) {
  JmapWorkerCache cache(&loop_, {}, kKnownFor);
  const protocol::Secret alice("Basic YWxpY2U6c2VjcmV0");
  const std::string key = *cache.key_for("https://a.example/jmap", "INBOX", alice);
  EXPECT_EQ(key, *cache.key_for("https://a.example/jmap", "INBOX", alice));
  EXPECT_NE(key, *cache.key_for("https://b.example/jmap", "INBOX", alice));
  EXPECT_NE(key, *cache.key_for("https://a.example/jmap", "Work", alice));
  EXPECT_NE(key, *cache.key_for("https://a.example/jmap", "INBOX",
                                protocol::Secret("Basic YWxpY2U6c2VjcmV1")));
  // No field can run into the next, with or without a separator in the data.
  EXPECT_NE(*cache.key_for("ab", "c", alice), *cache.key_for("a", "bc", alice));
  EXPECT_NE(*cache.key_for("u", std::string_view("a\0b", 3), protocol::Secret("c")),
            *cache.key_for(std::string_view("u\0a", 3), "b", protocol::Secret("c")));
  EXPECT_EQ(key.find("YWxpY2U"), std::string::npos) << "the credential is never in the key";
  // Another cache (another worker, or after a restart) hashes with another key.
  JmapWorkerCache other(&loop_, {}, kKnownFor);
  EXPECT_NE(key, *other.key_for("https://a.example/jmap", "INBOX", alice));
}

TEST_F(JmapWorkerCacheTest, RecallsWhatWasRememberedUntilItIsTooOld) {
  JmapWorkerCache cache(&loop_, {}, kKnownFor);
  EXPECT_EQ(cache.recall("k", kStart), nullptr);
  cache.remember("k", known("m1"), kStart);
  const JmapKnownMailbox* recalled = cache.recall("k", kStart + minutes(14));
  ASSERT_NE(recalled, nullptr);
  EXPECT_EQ(recalled->mailbox_id, "m1");
  EXPECT_EQ(recalled->api_url, "https://jmap.example/jmap/api/");
  EXPECT_EQ(cache.recall("k", kStart + kKnownFor), nullptr);
  EXPECT_EQ(cache.known(), 0u) << "an entry found too old is dropped";
}

TEST_F(JmapWorkerCacheTest, RememberingForZeroRemembersNothing) {
  JmapWorkerCache cache(&loop_, {}, Clock::duration::zero());
  cache.remember("k", known("m1"), kStart);
  EXPECT_EQ(cache.known(), 0u);
  EXPECT_EQ(cache.recall("k", kStart), nullptr);
  EXPECT_FALSE(cache.key_for("https://a.example/jmap", "INBOX", protocol::Secret("Basic x")))
      << "with nothing to recall the store neither hashes nor looks up";
}

TEST_F(JmapWorkerCacheTest, ANewerOpenReplacesAndForgetRemoves) {
  JmapWorkerCache cache(&loop_, {}, kKnownFor);
  cache.remember("k", known("m1"), kStart);
  cache.remember("k", known("m2"), kStart + minutes(10));
  EXPECT_EQ(cache.known(), 1u);
  // Its age counts from the newer open.
  ASSERT_NE(cache.recall("k", kStart + minutes(20)), nullptr);
  EXPECT_EQ(cache.recall("k", kStart + minutes(20))->mailbox_id, "m2");
  cache.forget("k");
  EXPECT_EQ(cache.recall("k", kStart + minutes(20)), nullptr);
  cache.forget("k");  // twice is harmless
}

TEST_F(JmapWorkerCacheTest, BeyondItsSizeTheOldestGoes) {
  JmapWorkerCache cache(&loop_, {}, kKnownFor);
  for (std::size_t i = 0; i <= JmapWorkerCache::kMaxKnown; ++i) {
    cache.remember("user" + std::to_string(i), known("m" + std::to_string(i)), kStart);
  }
  EXPECT_EQ(cache.known(), JmapWorkerCache::kMaxKnown);
  EXPECT_EQ(cache.recall("user0", kStart), nullptr);
  ASSERT_NE(cache.recall("user1", kStart), nullptr);
  EXPECT_EQ(cache.recall("user1", kStart)->mailbox_id, "m1");
  const std::string newest = "user" + std::to_string(JmapWorkerCache::kMaxKnown);
  ASSERT_NE(cache.recall(newest, kStart), nullptr);
}

TEST_F(JmapWorkerCacheTest, OneClientPerTlsContext) {
  SslCtxPtr one(SSL_CTX_new(TLS_method()));
  SslCtxPtr two(SSL_CTX_new(TLS_method()));
  JmapWorkerCache cache(&loop_, {}, kKnownFor);
  HttpClient& first = cache.client(one.get(), 1024);
  EXPECT_EQ(&first, &cache.client(one.get(), 1024));
  EXPECT_NE(&first, &cache.client(two.get(), 1024)) << "never a connection of other settings";
}

}  // namespace
}  // namespace popbridge::proxy
