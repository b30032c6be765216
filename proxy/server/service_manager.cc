// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/service_manager.h"

#include <algorithm>
#include <string>

#include "proxy/base/log.h"

#ifdef POPBRIDGE_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

#include <ctime>
#endif

namespace popbridge::proxy {

namespace {

#ifdef POPBRIDGE_HAVE_SYSTEMD
std::uint64_t monotonic_usec() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1000000 +
         static_cast<std::uint64_t>(now.tv_nsec) / 1000;
}
#endif

}  // namespace

ServiceManager::ServiceManager([[maybe_unused]] uv_loop_t* loop) {
#ifdef POPBRIDGE_HAVE_SYSTEMD
  std::uint64_t watchdog_usec = 0;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
    // Twice per period, as sd_watchdog_enabled(3) recommends.
    watchdog_interval_ms_ = std::max<std::uint64_t>(watchdog_usec / 2000, 1);
    watchdog_ = std::make_unique<Timer>(loop);
    log::info("watchdog", {{"interval_ms", static_cast<long long>(watchdog_interval_ms_)}});
  }
#endif
}

ServiceManager::~ServiceManager() = default;

void ServiceManager::ready(std::string_view status) {
  send("READY=1\nSTATUS=" + std::string(status));
  if (watchdog_ && !watchdog_->active()) {
    ping_watchdog();
  }
}

void ServiceManager::reloading() {
#ifdef POPBRIDGE_HAVE_SYSTEMD
  // MONOTONIC_USEC lets systemd 253+ (Type=notify-reload) match this to its own SIGHUP.
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()));
#endif
}

void ServiceManager::stopping(std::string_view status) {
  send("STOPPING=1\nSTATUS=" + std::string(status));
}

void ServiceManager::ping_watchdog() {
  send("WATCHDOG=1");
  watchdog_->start(watchdog_interval_ms_, [this] { ping_watchdog(); });
}

void ServiceManager::send([[maybe_unused]] const std::string& state) {
#ifdef POPBRIDGE_HAVE_SYSTEMD
  // Not unset_environment: a reload or the watchdog sends again later.
  if (const int result = sd_notify(0, state.c_str()); result < 0) {
    log::warn("service_manager_notify_failed", {{"error", result}});
  }
#endif
}

}  // namespace popbridge::proxy
