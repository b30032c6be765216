// SPDX-License-Identifier: Apache-2.0
#include "proxy/pop3/uidl_map_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>

namespace popbridge::proxy {
namespace {

TEST(UidlMapFileTest, NamesCannotLeaveTheDirectory) {
  EXPECT_EQ(uidl_map_file_name("alice@example.com"), "alice@example.com");
  EXPECT_EQ(uidl_map_file_name("../etc/passwd"), "%2E.%2Fetc%2Fpasswd");
  EXPECT_EQ(uidl_map_file_name(".hidden"), "%2Ehidden");
  EXPECT_EQ(uidl_map_file_name("DOMAIN\\j doe"), "DOMAIN%5Cj%20doe");
  EXPECT_EQ(uidl_map_file_name("j\xc3\xb6rg"), "j%C3%B6rg");
}

TEST(UidlMapFileTest, ReadsAMapAndTellsAMissingFileFromABadOne) {
  char dir[] = "/tmp/popbridge-uidl-map-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string directory = dir;
  std::ofstream(directory + "/alice") << "uidvalidity 7\n1 old-1\nbad line\n";
  std::ofstream(directory + "/bob") << "1 old-1\n";

  const UidlMapRead alice = read_uidl_map_file(directory, "alice");
  EXPECT_TRUE(alice.found);
  ASSERT_TRUE(alice.map);
  EXPECT_EQ(alice.map->uidvalidity, 7u);
  EXPECT_EQ(alice.map->uidls.at(1), "old-1");
  EXPECT_EQ(alice.problem, directory + "/alice: line 3: expected a UID and a UIDL");

  const UidlMapRead bob = read_uidl_map_file(directory, "bob");
  EXPECT_TRUE(bob.found);
  EXPECT_FALSE(bob.map);
  EXPECT_NE(bob.problem.find("uidvalidity"), std::string::npos);

  const UidlMapRead carol = read_uidl_map_file(directory, "carol");
  EXPECT_FALSE(carol.found);
  EXPECT_FALSE(carol.map);
  EXPECT_TRUE(carol.problem.empty()) << "no map for this user is not a problem";

  for (const char* name : {"alice", "bob"}) {
    unlink((directory + "/" + name).c_str());
  }
  rmdir(dir);
}

}  // namespace
}  // namespace popbridge::proxy
