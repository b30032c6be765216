// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <functional>
#include <type_traits>
#include <utility>

namespace popbridge::proxy {

// Owns the memory of one libuv handle. The memory is freed only in the uv_close
// callback, as libuv requires; the owner may go away at any time before that, since
// closing sets handle->data to null and every callback checks it first.
template <typename T>
class UvHandle {
 public:
  // init: e.g. [&](uv_timer_t* h) { return uv_timer_init(loop, h); }
  template <typename Init>
  requires std::is_invocable_r_v<int, Init, T*>
  explicit UvHandle(Init&& init) : handle_(new T{}) {
    if (init(handle_) != 0) {
      // An uninitialised handle must not be passed to uv_close.
      delete handle_;
      handle_ = nullptr;
    }
  }
  ~UvHandle() { close(); }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  T* get() const { return handle_; }
  explicit operator bool() const { return handle_ != nullptr; }

  void close() {
    if (handle_ == nullptr) {
      return;
    }
    auto* handle = reinterpret_cast<uv_handle_t*>(handle_);
    handle->data = nullptr;
    handle_ = nullptr;
    uv_close(handle, [](uv_handle_t* closed) { delete reinterpret_cast<T*>(closed); });
  }

 private:
  T* handle_;
};

// A one-shot or repeating timer driven by the loop's clock (testable without sleeps:
// everything that waits uses one of these, never the wall clock).
class Timer {
 public:
  explicit Timer(uv_loop_t* loop)
      : handle_([loop](uv_timer_t* h) { return uv_timer_init(loop, h); }) {
    handle_.get()->data = this;
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Replaces any pending expiry.
  void start(std::uint64_t timeout_ms, std::function<void()> on_expiry) {
    on_expiry_ = std::move(on_expiry);
    uv_timer_start(handle_.get(), &Timer::expired, timeout_ms, 0);
  }
  void stop() { uv_timer_stop(handle_.get()); }
  bool active() const { return uv_is_active(reinterpret_cast<uv_handle_t*>(handle_.get())) != 0; }

 private:
  static void expired(uv_timer_t* handle) noexcept {
    auto* self = static_cast<Timer*>(handle->data);
    if (self != nullptr && self->on_expiry_) {
      // The callback may destroy this Timer; move it out first.
      auto callback = std::move(self->on_expiry_);
      callback();
    }
  }

  UvHandle<uv_timer_t> handle_;
  std::function<void()> on_expiry_;
};

}  // namespace popbridge::proxy
