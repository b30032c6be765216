// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <prometheus/registry.h>
#include <uv.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/base/deferred_delete.h"
#include "proxy/base/uv_handle.h"
#include "proxy/net/listen_socket.h"
#include "proxy/server/admin_server.h"
#include "proxy/server/memory_trimmer.h"
#include "proxy/server/server.h"
#include "proxy/server/service_manager.h"
#include "proxy/server/upstream_probe.h"
#include "proxy/server/worker.h"

namespace popbridge::proxy {

// The process: worker loops that serve sessions, and on the main loop everything about
// running them: the admin endpoint, the upstream probe behind /readyz, signals (SIGTERM
// and SIGINT drain, SIGHUP reloads), and the certificate watch (Kubernetes replaces a
// mounted Secret by swapping a symlink, which a stat poll sees).
class Gateway {
 public:
  // log_level: --log-level, which outlasts reloads (empty: the file's logging.level).
  Gateway(std::string config_path, config::Config config, std::string log_level = {});
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Runs until drained or stopped; the process exit code.
  int run();

 private:
  bool start(std::string& error);
  void begin_drain(int signal_number);
  void reload(std::string_view trigger);
  void apply_reload(std::string_view trigger);
  std::string ready_status() const;
  void watch_files();
  void start_probe();
  bool ready() const;
  void worker_stopped();
  void close_main_handles();
  void publish_certificate_expiry();

  std::string config_path_;
  std::string log_level_;
  uv_loop_t* loop_;
  std::unique_ptr<DeferredDelete> deferred_delete_;  // outlives everything else on the loop
  prometheus::Registry registry_;
  std::unique_ptr<metrics::Metrics> metrics_;
  SettingsPtr settings_;
  std::atomic<std::size_t> open_sessions_{0};
  LoginGuard guard_;
  MailboxHistory mailboxes_;
  TokenCache tokens_;
  std::vector<ListenLock> listen_locks_;  // held for the process's life
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<UpstreamProbe> probe_;
  std::unique_ptr<MemoryTrimmer> memory_trimmer_;
  std::unique_ptr<ServiceManager> service_manager_;
  std::unique_ptr<UvHandle<uv_signal_t>> sigterm_;
  std::unique_ptr<UvHandle<uv_signal_t>> sigint_;
  std::unique_ptr<UvHandle<uv_signal_t>> sighup_;
  struct FileWatch {
    FileWatch(Gateway* owner, std::string_view why, uv_loop_t* loop)
        : gateway(owner),
          trigger(why),
          handle([loop](uv_fs_poll_t* h) { return uv_fs_poll_init(loop, h); }) {}
    Gateway* gateway;
    std::string_view trigger;  // a literal: "certificate_changed" or "file_changed"
    UvHandle<uv_fs_poll_t> handle;
  };
  std::vector<std::unique_ptr<FileWatch>> file_watches_;
  std::unique_ptr<Timer> reload_debounce_;
  std::unique_ptr<UvHandle<uv_async_t>> stopped_;  // workers wake main when they finish
  std::atomic<std::size_t> workers_running_{0};
  bool draining_ = false;
  int exit_code_ = 0;
};

}  // namespace popbridge::proxy
