// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string_view>

#include "proxy/base/uv_handle.h"

namespace popbridge::proxy {

// Tells the service manager (systemd, Type=notify) what the process is doing: ready once
// every listener is open, reloading while a SIGHUP is applied, stopping while draining,
// and a watchdog ping from the main loop, so a wedged main loop is restarted. Without
// NOTIFY_SOCKET (a plain shell, a container) every call does nothing. Built without
// libsystemd (-DPOPBRIDGE_SYSTEMD=OFF), it never does anything.
class ServiceManager {
 public:
  explicit ServiceManager(uv_loop_t* loop);
  ~ServiceManager();
  ServiceManager(const ServiceManager&) = delete;
  ServiceManager& operator=(const ServiceManager&) = delete;

  void ready(std::string_view status);
  void reloading();
  void stopping(std::string_view status);

 private:
  void send(const std::string& state);
  void ping_watchdog();

  std::unique_ptr<Timer> watchdog_;
  std::uint64_t watchdog_interval_ms_ = 0;
};

}  // namespace popbridge::proxy
