// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "metrics/metrics.h"
#include "proxy/base/deferred_delete.h"
#include "proxy/server/server.h"

namespace popbridge::proxy {

// One event loop on its own thread, with its own Server and its own SO_REUSEPORT
// listening sockets. The main thread talks to it only through post_*(), which wake the
// loop with a uv_async handle; nothing else crosses threads except atomics and the
// (thread-safe) metric children.
class Worker {
 public:
  // on_stopped runs on the worker's thread once its loop has nothing left to do.
  Worker(std::size_t index, SettingsPtr settings, metrics::Metrics& metrics,
         std::atomic<std::size_t>& open_sessions, LoginGuard& guard, MailboxHistory& mailboxes,
         TokenCache& tokens, std::function<void()> on_stopped);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Binds the listeners (on the calling thread, before the loop runs), then starts the
  // thread.
  bool start(std::string& error);
  void post_settings(SettingsPtr settings);
  void post_drain(config::Duration deadline);
  void post_stop();
  void join();

  bool listening() const { return listening_.load(); }

 private:
  static void on_wakeup(uv_async_t* handle) noexcept;
  void apply_commands();
  void wake();
  void shut_down();

  std::size_t index_;
  uv_loop_t loop_{};
  std::unique_ptr<DeferredDelete> deferred_delete_;  // made after uv_loop_init, gone before close
  std::unique_ptr<Server> server_;
  std::unique_ptr<UvHandle<uv_async_t>> wakeup_;  // guarded by mutex_
  std::function<void()> on_stopped_;
  std::thread thread_;
  std::atomic<bool> listening_{false};

  std::mutex mutex_;  // guards the commands below
  SettingsPtr pending_settings_;
  std::optional<config::Duration> pending_drain_;
  bool pending_stop_ = false;
};

}  // namespace popbridge::proxy
