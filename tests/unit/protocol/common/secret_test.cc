// SPDX-License-Identifier: Apache-2.0
#include "protocol/common/secret.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>

namespace popbridge::protocol {
namespace {

// Reads octets the string still owns (its capacity) after clear(): that is where a
// password would linger if clear() only reset the size.
bool all_zero(const char* data, std::size_t size) {
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] != '\0') {
      return false;
    }
  }
  return true;
}

TEST(WipeTest, ZeroesTheRange) {
  char buffer[] = "hunter2-hunter2";
  wipe(buffer, sizeof(buffer) - 1);
  EXPECT_TRUE(all_zero(buffer, sizeof(buffer)));
}

TEST(WipeTest, LeavesBytesOutsideTheRange) {
  char buffer[] = "abcdef";
  wipe(buffer + 1, 3);
  EXPECT_EQ(buffer[0], 'a');
  EXPECT_TRUE(all_zero(buffer + 1, 3));
  EXPECT_EQ(buffer[4], 'e');
  wipe(nullptr, 0);  // must not crash
}

TEST(SecretTest, HoldsItsValue) {
  const Secret empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.size(), 0u);

  const Secret secret(std::string_view("pa ss\0word", 10));
  EXPECT_FALSE(secret.empty());
  EXPECT_EQ(secret.size(), 10u);
  EXPECT_EQ(secret.view(), std::string_view("pa ss\0word", 10));
}

class SecretWipeTest : public testing::TestWithParam<std::string> {};

TEST_P(SecretWipeTest, ClearWipesTheBuffer) {
  Secret secret(GetParam());
  const char* data = secret.view().data();
  secret.clear();
  EXPECT_TRUE(secret.empty());
  // The buffer is kept (clear() does not shrink), so its old contents are readable.
  EXPECT_EQ(secret.view().data(), data);
  EXPECT_TRUE(all_zero(data, GetParam().size()));
}

TEST_P(SecretWipeTest, CopyAssignmentWipesTheOldValue) {
  Secret secret(GetParam());
  const char* data = secret.view().data();
  secret = Secret("x");
  EXPECT_EQ(secret.view(), "x");
  // A one-octet value fits in the old buffer, so it is reused in place.
  ASSERT_EQ(secret.view().data(), data);
  EXPECT_TRUE(all_zero(data + 1, GetParam().size()));
}

TEST_P(SecretWipeTest, MoveLeavesTheSourceEmptyAndWiped) {
  Secret source(GetParam());
  const char* data = source.view().data();
  Secret target(std::move(source));
  EXPECT_EQ(target.view(), GetParam());
  EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move): part of the contract
  if (source.view().data() == data) {
    // Short values are copied out of the small-string buffer, which must not keep them.
    EXPECT_TRUE(all_zero(data, GetParam().size()));
  }
}

TEST_P(SecretWipeTest, MoveAssignment) {
  Secret source(GetParam());
  Secret target("an old password that is long enough for the heap");
  target = std::move(source);
  EXPECT_EQ(target.view(), GetParam());
  EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(all_zero(source.view().data(), 1));
}

TEST_P(SecretWipeTest, CopyKeepsBothValues) {
  const Secret original(GetParam());
  Secret copy(original);
  EXPECT_EQ(copy.view(), GetParam());
  Secret assigned;
  assigned = original;
  EXPECT_EQ(assigned.view(), GetParam());
  EXPECT_EQ(original.view(), GetParam());
}

TEST_P(SecretWipeTest, SelfAssignmentKeepsTheValue) {
  Secret secret(GetParam());
  Secret& alias = secret;
  secret = alias;
  EXPECT_EQ(secret.view(), GetParam());
  secret = std::move(alias);
  EXPECT_EQ(secret.view(), GetParam());
}

// Short values live in the small-string buffer, long ones on the heap.
INSTANTIATE_TEST_SUITE_P(Sizes, SecretWipeTest,
                         testing::Values(std::string("pw"), std::string("fifteen-octets!"),
                                         std::string(100, 's'), std::string(5000, 'L')));

}  // namespace
}  // namespace popbridge::protocol
