// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/process_stats.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

namespace popbridge::proxy {

namespace {

double seconds_since_epoch() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Taken when the binary is loaded: the process's start to well within a second.
const double kStartTime = seconds_since_epoch();

double seconds(const timeval& value) {
  return static_cast<double>(value.tv_sec) + static_cast<double>(value.tv_usec) / 1e6;
}

}  // namespace

std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0;
  std::size_t resident = 0;
  if (!(statm >> pages >> resident)) {
    return 0;
  }
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

metrics::Metrics::ProcessSample sample_process() {
  metrics::Metrics::ProcessSample sample;
  sample.start_time_seconds = kStartTime;
  const auto page = static_cast<double>(sysconf(_SC_PAGESIZE));
  std::ifstream statm("/proc/self/statm");
  double pages = 0;
  double resident = 0;
  if (statm >> pages >> resident) {
    sample.virtual_bytes = pages * page;
    sample.resident_bytes = resident * page;
  }
  std::error_code error;
  for (std::filesystem::directory_iterator it("/proc/self/fd", error), end; !error && it != end;
       it.increment(error)) {
    ++sample.open_fds;
  }
  if (sample.open_fds > 0) {
    --sample.open_fds;  // the descriptor that read the directory
  }
  if (rlimit limit{}; getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    sample.max_fds = static_cast<double>(limit.rlim_cur);
  }
  if (rusage usage{}; getrusage(RUSAGE_SELF, &usage) == 0) {
    sample.cpu_seconds = seconds(usage.ru_utime) + seconds(usage.ru_stime);
  }
  return sample;
}

}  // namespace popbridge::proxy
