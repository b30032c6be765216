// SPDX-License-Identifier: Apache-2.0
#include "protocol/http/retry_after.h"

#include <gtest/gtest.h>

namespace popbridge::protocol {
namespace {

using std::chrono::seconds;

// 1994-11-06 08:49:37 UTC, the date RFC 9110's examples use.
const auto kExampleDate = std::chrono::system_clock::time_point(seconds(784111777));
constexpr seconds kCap(900);

TEST(RetryAfter, DeltaSeconds) {
  EXPECT_EQ(parse_retry_after("120", kExampleDate, kCap), seconds(120));
  EXPECT_EQ(parse_retry_after(" 0 ", kExampleDate, kCap), seconds(0));
  EXPECT_EQ(parse_retry_after("007", kExampleDate, kCap), seconds(7));
}

TEST(RetryAfter, LongWaitsAreCappedWithoutOverflow) {
  EXPECT_EQ(parse_retry_after("901", kExampleDate, kCap), kCap);
  EXPECT_EQ(parse_retry_after("99999999999999999999999999999", kExampleDate, kCap), kCap);
}

TEST(RetryAfter, TheThreeDateForms) {
  // Each names the example date plus 30 seconds.
  for (const char* date : {"Sun, 06 Nov 1994 08:50:07 GMT", "Sunday, 06-Nov-94 08:50:07 GMT",
                           "Sun Nov  6 08:50:07 1994"}) {
    EXPECT_EQ(parse_retry_after(date, kExampleDate, kCap), seconds(30)) << date;
  }
}

TEST(RetryAfter, DatesInThePastMeanNow) {
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", kExampleDate, kCap), seconds(0));
  EXPECT_EQ(parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", kExampleDate, kCap), kCap);
}

TEST(RetryAfter, AnythingElseHoldsNothingBack) {
  for (const char* bad : {"", "  ", "-5", "1.5", "12 s", "soon", "Sun, 06 Nov 1994 08:50:07",
                          "Sun, 06 Nov 1994 08:50:07 GMT trailing", "Sun, 32 Nov 1994 08:50:07 GMT",
                          "Xyz, 06 Nov 1994 08:50:07 GMT"}) {
    EXPECT_EQ(parse_retry_after(bad, kExampleDate, kCap), std::nullopt) << '"' << bad << '"';
  }
  // Longer than any date: refused before it is copied.
  EXPECT_EQ(parse_retry_after(std::string(100, 'S'), kExampleDate, kCap), std::nullopt);
}

}  // namespace
}  // namespace popbridge::protocol
