// SPDX-License-Identifier: Apache-2.0
#include "proxy/identity/login_guard.h"

#include <gtest/gtest.h>

namespace popbridge::proxy {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

class LoginGuardTest : public ::testing::Test {
 protected:
  LoginGuardTest() : guard_([this] { return now_; }) {
    auth_.failure_delay = seconds(2);
    auth_.max_failure_delay = seconds(15);
    auth_.failure_memory = minutes(15);
  }
  LoginGuard::Clock::time_point now_{};
  config::Auth auth_;
  LoginGuard guard_;
};

TEST_F(LoginGuardTest, DelayDoublesUpToTheCap) {
  EXPECT_EQ(guard_.record_failure(auth_, "192.0.2.1", "alice"), seconds(2));
  EXPECT_EQ(guard_.record_failure(auth_, "192.0.2.1", "alice"), seconds(4));
  EXPECT_EQ(guard_.record_failure(auth_, "192.0.2.1", "alice"), seconds(8));
  EXPECT_EQ(guard_.record_failure(auth_, "192.0.2.1", "alice"), seconds(15));
  EXPECT_EQ(guard_.record_failure(auth_, "192.0.2.1", "alice"), seconds(15));
}

TEST_F(LoginGuardTest, AddressAndUserCountSeparately) {
  guard_.record_failure(auth_, "192.0.2.1", "alice");
  guard_.record_failure(auth_, "192.0.2.1", "alice");
  // Same user from elsewhere: the user's count goes on.
  EXPECT_EQ(guard_.record_failure(auth_, "198.51.100.7", "alice"), seconds(8));
  // Same address, other user: the address's count goes on.
  EXPECT_EQ(guard_.record_failure(auth_, "192.0.2.1", "bob"), seconds(8));
  // Unrelated address and user: back to the base delay.
  EXPECT_EQ(guard_.record_failure(auth_, "203.0.113.9", "carol"), seconds(2));
}

TEST_F(LoginGuardTest, FailuresExpire) {
  guard_.record_failure(auth_, "192.0.2.1", "alice");
  guard_.record_failure(auth_, "192.0.2.1", "alice");
  EXPECT_EQ(guard_.recent_failures(auth_, "192.0.2.1", "alice"), 2u);
  now_ += minutes(16);
  EXPECT_EQ(guard_.recent_failures(auth_, "192.0.2.1", "alice"), 0u);
  EXPECT_EQ(guard_.record_failure(auth_, "192.0.2.1", "alice"), seconds(2));
}

TEST_F(LoginGuardTest, SuccessClearsTheUserButNotTheAddress) {
  guard_.record_failure(auth_, "192.0.2.1", "alice");
  guard_.record_success("alice");
  EXPECT_EQ(guard_.recent_failures(auth_, "", "alice"), 0u);
  EXPECT_EQ(guard_.recent_failures(auth_, "192.0.2.1", ""), 1u);
}

TEST_F(LoginGuardTest, ZeroDelayStaysZero) {
  auth_.failure_delay = milliseconds(0);
  guard_.record_failure(auth_, "192.0.2.1", "alice");
  EXPECT_EQ(guard_.record_failure(auth_, "192.0.2.1", "alice"), milliseconds(0));
}

TEST_F(LoginGuardTest, UserLockIsExclusive) {
  EXPECT_TRUE(guard_.lock_user("alice"));
  EXPECT_FALSE(guard_.lock_user("alice"));
  EXPECT_TRUE(guard_.lock_user("bob"));
  guard_.unlock_user("alice");
  EXPECT_TRUE(guard_.lock_user("alice"));
}

TEST_F(LoginGuardTest, LoginDelayAdmitsOncePerDelayPerUser) {
  EXPECT_FALSE(guard_.admit_login("alice", minutes(5)));
  now_ += minutes(1);
  EXPECT_EQ(guard_.admit_login("alice", minutes(5)), minutes(4));
  EXPECT_FALSE(guard_.admit_login("bob", minutes(5)));  // users count separately
  now_ += minutes(4);
  EXPECT_FALSE(guard_.admit_login("alice", minutes(5)));
  // A refused attempt does not restart the clock; an admitted one does.
  now_ += seconds(10);
  EXPECT_EQ(guard_.admit_login("alice", minutes(5)), minutes(5) - seconds(10));
}

}  // namespace
}  // namespace popbridge::proxy
