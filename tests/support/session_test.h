// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <gtest/gtest.h>

#include "tests/support/session_harness.h"

namespace popbridge::testing {

// The session tests' fixture: logging in as the fake store's user.
class SessionTest : public ::testing::Test {
 public:
  static void login(SessionHarness& session) {
    ASSERT_TRUE(session.read_until("\r\n").starts_with("+OK"));
    login_after_greeting(session);
  }
  static void login_after_greeting(SessionHarness& session) {
    ASSERT_TRUE(session.command("USER alice").starts_with("+OK"));
    ASSERT_TRUE(session.command("PASS secret").starts_with("+OK"));
  }
};

}  // namespace popbridge::testing
