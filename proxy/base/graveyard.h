// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <memory>
#include <vector>

#include "proxy/base/uv_handle.h"

namespace popbridge::proxy {

// Keeps objects alive until a later loop turn. Sessions, upstream clients and admin
// connections are retired this way, so nothing is destroyed inside one of its own
// callbacks (the caller may be deep inside a parser's feed()).
class Graveyard {
 public:
  explicit Graveyard(uv_loop_t* loop) : reaper_(loop) {}
  ~Graveyard() { dead_.clear(); }
  Graveyard(const Graveyard&) = delete;
  Graveyard& operator=(const Graveyard&) = delete;

  void bury(std::shared_ptr<void> object) {
    dead_.push_back(std::move(object));
    schedule();
  }

 private:
  void schedule() {
    if (reaper_.active()) {
      return;
    }
    reaper_.start(0, [this] {
      // Destructors may bury more objects; those wait for the next turn.
      std::vector<std::shared_ptr<void>> batch = std::move(dead_);
      dead_.clear();
      batch.clear();
      if (!dead_.empty()) {
        schedule();
      }
    });
  }

  Timer reaper_;
  std::vector<std::shared_ptr<void>> dead_;
};

}  // namespace popbridge::proxy
