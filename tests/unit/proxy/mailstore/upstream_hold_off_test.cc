// SPDX-License-Identifier: Apache-2.0
#include "proxy/mailstore/jmap/upstream_hold_off.h"

#include <gtest/gtest.h>

namespace popbridge::proxy {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = UpstreamHoldOff::Clock;

const Clock::time_point kStart = Clock::time_point(seconds(1000));

TEST(UpstreamHoldOff, HoldsOnlyThatUpstreamUntilTheTime) {
  UpstreamHoldOff hold_off;
  hold_off.hold("https://a.example/jmap", kStart + seconds(30));
  EXPECT_EQ(hold_off.remaining("https://a.example/jmap", kStart), seconds(30));
  EXPECT_EQ(hold_off.remaining("https://b.example/jmap", kStart), std::nullopt);
  // Rounded up: 0.5 s left is still a reason to wait.
  EXPECT_EQ(hold_off.remaining("https://a.example/jmap", kStart + milliseconds(29'500)),
            seconds(1));
  EXPECT_EQ(hold_off.remaining("https://a.example/jmap", kStart + seconds(30)), std::nullopt);
}

TEST(UpstreamHoldOff, ALaterTimeExtendsAndAnEarlierOneNeverShortens) {
  UpstreamHoldOff hold_off;
  hold_off.hold("u", kStart + seconds(30));
  hold_off.hold("u", kStart + seconds(10));
  EXPECT_EQ(hold_off.remaining("u", kStart), seconds(30));
  hold_off.hold("u", kStart + seconds(60));
  EXPECT_EQ(hold_off.remaining("u", kStart), seconds(60));
}

TEST(UpstreamHoldOff, AnExpiredHoldIsForgottenAndCanBeSetAgain) {
  UpstreamHoldOff hold_off;
  hold_off.hold("u", kStart + seconds(5));
  EXPECT_EQ(hold_off.remaining("u", kStart + seconds(6)), std::nullopt);
  hold_off.hold("u", kStart + seconds(8));
  EXPECT_EQ(hold_off.remaining("u", kStart + seconds(6)), seconds(2));
  hold_off.clear();
  EXPECT_EQ(hold_off.remaining("u", kStart + seconds(6)), std::nullopt);
}

TEST(UpstreamHoldOff, OneTableForTheProcess) {
  EXPECT_EQ(&UpstreamHoldOff::process_wide(), &UpstreamHoldOff::process_wide());
}

}  // namespace
}  // namespace popbridge::proxy
