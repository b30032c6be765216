// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include "proxy/identity/oauth2_tokens.h"

namespace popbridge::proxy {
namespace {

TEST(TokenCacheTest, OneClaimPerKeyUntilReleased) {
  TokenCache cache;
  EXPECT_TRUE(cache.claim("alice"));
  EXPECT_FALSE(cache.claim("alice")) << "another worker's fetch is in flight";
  EXPECT_TRUE(cache.claim("bob")) << "claims are per key";
  cache.release("alice");
  EXPECT_TRUE(cache.claim("alice"));
}

TEST(TokenCacheTest, TokensExpireBeforeTheirLifetimeEnds) {
  TokenCache::Clock::time_point now{};
  TokenCache cache([&] { return now; });
  cache.store("alice", protocol::Secret("token"), std::chrono::seconds(3600));
  EXPECT_EQ(cache.find("alice").view(), "token");
  now += std::chrono::seconds(3540);
  EXPECT_TRUE(cache.find("alice").empty()) << "refreshed a minute before the endpoint's expiry";

  cache.store("bob", protocol::Secret("short"), std::chrono::seconds(10));
  now += std::chrono::seconds(4);
  EXPECT_EQ(cache.find("bob").view(), "short");
  now += std::chrono::seconds(1);
  EXPECT_TRUE(cache.find("bob").empty()) << "a short-lived token is refreshed at half its life";
  cache.forget("alice");
  EXPECT_TRUE(cache.find("alice").empty());
}

}  // namespace
}  // namespace popbridge::proxy
