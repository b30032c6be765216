// SPDX-License-Identifier: Apache-2.0
#include "proxy/pop3/uidl_map_cache.h"

#include <gtest/gtest.h>

namespace popbridge::proxy {
namespace {

UidlMapRead map_with(std::uint32_t uid, std::string uidl) {
  UidlMapRead read;
  read.found = true;
  read.map = protocol::UidlMap{};
  read.map->uidvalidity = 9;
  read.map->uidls[uid] = std::move(uidl);
  return read;
}

TEST(UidlMapCacheTest, HoldsForItsLifetimeOnly) {
  UidlMapCache cache;
  const auto start = UidlMapCache::Clock::now();
  EXPECT_FALSE(cache.find("alice", start));
  cache.store("alice", 9, map_with(1, "old-1"), start);
  auto found = cache.find("alice", start + std::chrono::minutes(4));
  ASSERT_TRUE(found);
  EXPECT_EQ(found->uidvalidity, 9u);
  EXPECT_EQ(found->read->map->uidls.at(1), "old-1");
  EXPECT_FALSE(cache.find("alice", start + UidlMapCache::kLifetime)) << "a re-import is seen";
  EXPECT_FALSE(cache.find("bob", start));
}

TEST(UidlMapCacheTest, RemembersThatAUserHasNoMap) {
  UidlMapCache cache;
  UidlMapRead none;
  none.problem = "no METADATA";
  cache.store("carol", 3, none);
  auto found = cache.find("carol");
  ASSERT_TRUE(found);
  EXPECT_FALSE(found->read->map);
  EXPECT_EQ(found->read->problem, "no METADATA");
}

TEST(UidlMapCacheTest, ReplacesAnEntry) {
  UidlMapCache cache;
  cache.store("alice", 9, map_with(1, "old-1"));
  cache.store("alice", 10, map_with(1, "new-1"));
  EXPECT_EQ(cache.find("alice")->uidvalidity, 10u);
  EXPECT_EQ(cache.find("alice")->read->map->uidls.at(1), "new-1");
}

}  // namespace
}  // namespace popbridge::proxy
