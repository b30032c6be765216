// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace popbridge::metrics {

enum class Mechanism : std::size_t { kUser, kPlain, kLogin, kXoauth2, kOauthbearer, kCount };
enum class AuthResult : std::size_t {
  kSuccess,
  kBadCredentials,
  kUpstreamUnavailable,
  kPlaintextRefused,
  kInUse,
  kRateLimited,
  kLoginDelay,
  kCount
};
enum class UpstreamError : std::size_t {
  kConnect,
  kTls,
  kTimeout,
  kProtocol,
  kBye,
  kClosed,
  kRefused,
  kThrottled,  // the server asked to wait (HTTP 429 or 503)
  kCount
};
enum class SessionEnd : std::size_t {
  kQuit,
  kTimeout,
  kClientClosed,
  kUpstreamFailed,
  kShutdown,
  kAuthFailures,
  kTlsHandshake,
  kUpdateFailed,   // QUIT, but the upstream did not confirm the deletions
  kProtocolError,  // the client broke the protocol (an over-long line)
  kCount
};
enum class Rejection : std::size_t { kLimit, kTlsHandshake, kProxyProtocol, kDraining, kCount };
enum class Direction : std::size_t { kClientIn, kClientOut, kUpstreamIn, kUpstreamOut, kCount };

std::string_view name(Mechanism value);
std::string_view name(AuthResult value);
std::string_view name(UpstreamError value);
std::string_view name(SessionEnd value);
std::string_view name(Rejection value);
std::string_view name(Direction value);

template <typename T, typename Enum>
using PerValue = std::array<T*, static_cast<std::size_t>(Enum::kCount)>;

// Every metric of the gateway, declared once at start-up. Each labelled child the hot
// path can touch is resolved here, so an event costs one atomic add and never a registry
// or label-map look-up. Tests build their own on a private registry.
class Metrics {
 public:
  struct Listener {
    prometheus::Counter* accepted;
    prometheus::Gauge* active;
    prometheus::Counter* tls_ok_12;
    prometheus::Counter* tls_ok_13;
    prometheus::Counter* tls_error;
    prometheus::Histogram* tls_duration;
  };
  struct Command {
    prometheus::Counter* ok;
    prometheus::Counter* err;
    prometheus::Histogram* duration;
  };

  // listeners: the configured listener names, in order; commands: the POP3 verbs, in
  // the order of their enum (an extra "invalid" entry is added at the end).
  Metrics(prometheus::Registry& registry, const std::vector<std::string>& listeners,
          const std::vector<std::string_view>& commands, std::string_view version,
          std::string_view revision, std::string_view tls_library);

  Listener& listener(std::size_t index) { return listeners_[index]; }
  Command& command(std::size_t index) { return commands_[index]; }
  Command& invalid_command() { return commands_.back(); }

  prometheus::Counter& auth(Mechanism mechanism, AuthResult result) {
    return *auth_[static_cast<std::size_t>(mechanism)][static_cast<std::size_t>(result)];
  }
  prometheus::Counter& upstream_error(UpstreamError kind) {
    return *upstream_errors_[static_cast<std::size_t>(kind)];
  }
  prometheus::Counter& session_end(SessionEnd reason) {
    return *sessions_[static_cast<std::size_t>(reason)];
  }
  prometheus::Counter& rejected(Rejection reason) {
    return *rejected_[static_cast<std::size_t>(reason)];
  }
  prometheus::Counter& bytes(Direction direction) {
    return *bytes_[static_cast<std::size_t>(direction)];
  }

  prometheus::Counter& upstream_connect_ok;
  prometheus::Counter& upstream_connect_error;
  prometheus::Histogram& upstream_connect_duration;
  prometheus::Gauge& upstream_active;
  prometheus::Counter& upstream_logins_reused;
  prometheus::Gauge& upstream_connections_parked;
  prometheus::Counter& messages_retrieved;
  prometheus::Counter& messages_deleted;
  prometheus::Counter& deletions_rolled_back;
  prometheus::Counter& uidvalidity_changes;
  // The HTTP services logins depend on: the auth_http hook and the OAuth2 token endpoint.
  // ok: an answer (the hook's Auth-Status, a token or a refusal); error: none (connect,
  // TLS, timeout, a malformed or non-200 answer from the hook, a 5xx from the endpoint).
  prometheus::Counter& hook_ok;
  prometheus::Counter& hook_error;
  prometheus::Histogram& hook_duration;
  prometheus::Counter& token_ok;
  prometheus::Counter& token_error;
  prometheus::Histogram& token_duration;
  prometheus::Counter& token_cache_hit;
  prometheus::Counter& token_cache_miss;
  prometheus::Counter& retrieve_size_mismatches;
  // limits.read_ahead: messages fetched before their RETR, and whether a RETR used them.
  prometheus::Counter& read_ahead_used;
  prometheus::Counter& read_ahead_unused;
  prometheus::Counter& reload_success;
  prometheus::Counter& reload_failure;
  prometheus::Gauge& process_resident;
  prometheus::Gauge& process_virtual;
  prometheus::Gauge& process_open_fds;
  prometheus::Gauge& process_max_fds;
  prometheus::Counter& process_cpu;
  prometheus::Gauge& process_start_time;
  prometheus::Gauge& ready;
  prometheus::Family<prometheus::Gauge>& certificate_expiry;  // {certificate}

  // The process, under the names every Prometheus client library uses, so the usual
  // dashboards and alerts (memory, descriptors near their limit) work unchanged.
  struct ProcessSample {
    double resident_bytes = 0;
    double virtual_bytes = 0;
    double open_fds = 0;
    double max_fds = 0;
    double cpu_seconds = 0;
    double start_time_seconds = 0;
  };
  void set_process(const ProcessSample& sample);

 private:
  std::vector<Listener> listeners_;
  std::vector<Command> commands_;
  std::array<PerValue<prometheus::Counter, AuthResult>, static_cast<std::size_t>(Mechanism::kCount)>
      auth_{};
  PerValue<prometheus::Counter, UpstreamError> upstream_errors_{};
  PerValue<prometheus::Counter, SessionEnd> sessions_{};
  PerValue<prometheus::Counter, Rejection> rejected_{};
  PerValue<prometheus::Counter, Direction> bytes_{};
};

// The Prometheus text exposition of everything in the registry.
std::string expose(prometheus::Registry& registry);

}  // namespace popbridge::metrics
