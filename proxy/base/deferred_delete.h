// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <memory>
#include <vector>

#include "protocol/common/invariant.h"
#include "proxy/base/uv_handle.h"

namespace popbridge::proxy {

// Keeps objects alive until a later loop turn, so nothing is destroyed inside one of its
// own callbacks (the caller may be deep inside a parser's feed()). Sessions, upstream
// clients, HTTP connections and admin connections are all retired this way.
//
// One per loop: whoever runs a loop makes one right after uv_loop_init and destroys it
// last, before uv_loop_close; everything on the loop finds it with of(loop). The loop's
// data pointer is its registration, so nothing else may use it.
class DeferredDelete {
 public:
  explicit DeferredDelete(uv_loop_t* loop) : loop_(loop), reaper_(loop) {
    POPBRIDGE_INVARIANT(loop->data == nullptr);
    loop->data = this;
  }
  ~DeferredDelete() {
    // Destructors may retire more objects (a session its store); those go too.
    while (!dead_.empty()) {
      std::vector<std::shared_ptr<void>> batch = std::move(dead_);
      dead_.clear();
      batch.clear();
    }
    loop_->data = nullptr;
  }
  DeferredDelete(const DeferredDelete&) = delete;
  DeferredDelete& operator=(const DeferredDelete&) = delete;

  // The loop's deferred delete; the loop's owner made it.
  static DeferredDelete& of(uv_loop_t* loop) {
    POPBRIDGE_INVARIANT(loop->data != nullptr);
    return *static_cast<DeferredDelete*>(loop->data);
  }

  void retire(std::shared_ptr<void> object) {
    dead_.push_back(std::move(object));
    schedule();
  }

 private:
  void schedule() {
    if (reaper_.active()) {
      return;
    }
    reaper_.start(0, [this] {
      // Destructors may retire more objects; those wait for the next turn.
      std::vector<std::shared_ptr<void>> batch = std::move(dead_);
      dead_.clear();
      batch.clear();
      if (!dead_.empty()) {
        schedule();
      }
    });
  }

  uv_loop_t* loop_;
  Timer reaper_;
  std::vector<std::shared_ptr<void>> dead_;
};

}  // namespace popbridge::proxy
