// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/memory_trimmer.h"

#include <gtest/gtest.h>

namespace popbridge::proxy {
namespace {

TEST(MemoryTrimmerTest, TrimsOnlyWhenLoadHalvedByEnoughSessions) {
  EXPECT_TRUE(MemoryTrimmer::load_dropped(500, 0));
  EXPECT_TRUE(MemoryTrimmer::load_dropped(500, 250));
  EXPECT_FALSE(MemoryTrimmer::load_dropped(500, 251)) << "not yet half";
  EXPECT_FALSE(MemoryTrimmer::load_dropped(100, 40)) << "60 fewer sessions free too little";
  EXPECT_TRUE(MemoryTrimmer::load_dropped(128, 64));
  EXPECT_FALSE(MemoryTrimmer::load_dropped(0, 0)) << "an idle process is left alone";
  EXPECT_FALSE(MemoryTrimmer::load_dropped(10, 20)) << "load rising";
}

}  // namespace
}  // namespace popbridge::proxy
