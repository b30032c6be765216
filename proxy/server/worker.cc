// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/worker.h"

#include "proxy/base/log.h"

namespace popbridge::proxy {

Worker::Worker(std::size_t index, SettingsPtr settings, metrics::Metrics& metrics,
               std::atomic<std::size_t>& open_sessions, LoginGuard& guard,
               MailboxHistory& mailboxes, TokenCache& tokens, std::function<void()> on_stopped)
    : index_(index), on_stopped_(std::move(on_stopped)) {
  uv_loop_init(&loop_);
  deferred_delete_ = std::make_unique<DeferredDelete>(&loop_);
  server_ = std::make_unique<Server>(&loop_, index_, std::move(settings), metrics, open_sessions,
                                     guard, mailboxes, tokens);
  wakeup_ = std::make_unique<UvHandle<uv_async_t>>(
      [this](uv_async_t* handle) { return uv_async_init(&loop_, handle, &Worker::on_wakeup); });
  wakeup_->get()->data = this;
}

Worker::~Worker() {
  join();
  // No thread runs the loop any more: close what is left from here.
  server_.reset();
  {
    std::lock_guard lock(mutex_);
    wakeup_.reset();
  }
  deferred_delete_.reset();
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

bool Worker::start(std::string& error) {
  if (!server_->start(error)) {
    return false;
  }
  listening_ = true;
  thread_ = std::thread([this] {
    uv_run(&loop_, UV_RUN_DEFAULT);
    // The loop ran dry: everything is closed. Tear down on this thread, then tell main.
    server_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    log::debug("worker_stopped", {{"worker", index_}});
    on_stopped_();
  });
  return true;
}

void Worker::post_settings(SettingsPtr settings) {
  std::lock_guard lock(mutex_);
  pending_settings_ = std::move(settings);
  wake();
}

void Worker::post_drain(config::Duration deadline) {
  std::lock_guard lock(mutex_);
  pending_drain_ = deadline;
  wake();
}

void Worker::post_stop() {
  std::lock_guard lock(mutex_);
  pending_stop_ = true;
  wake();
}

void Worker::join() {
  if (thread_.joinable()) {
    thread_.join();
  }
}

void Worker::on_wakeup(uv_async_t* handle) noexcept {
  if (auto* self = static_cast<Worker*>(handle->data)) {
    self->apply_commands();
  }
}

void Worker::apply_commands() {
  SettingsPtr settings;
  std::optional<config::Duration> drain;
  bool stop = false;
  {
    std::lock_guard lock(mutex_);
    settings = std::move(pending_settings_);
    pending_settings_.reset();
    drain = pending_drain_;
    pending_drain_.reset();
    stop = pending_stop_;
  }
  if (!server_) {
    return;
  }
  if (settings) {
    server_->update_settings(std::move(settings));
  }
  if (stop) {
    listening_ = false;
    server_->stop();
    shut_down();
    return;
  }
  if (drain) {
    listening_ = false;
    server_->drain(*drain, [this] { shut_down(); });
  }
}

void Worker::wake() {
  // Called with mutex_ held, so the worker cannot close the handle meanwhile.
  if (wakeup_) {
    uv_async_send(wakeup_->get());
  }
}

void Worker::shut_down() {
  // Closing the wake-up handle lets the loop run dry once the sessions are gone.
  std::lock_guard lock(mutex_);
  wakeup_.reset();
}

}  // namespace popbridge::proxy
