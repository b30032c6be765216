// SPDX-License-Identifier: Apache-2.0
#include "metrics/metrics.h"

#include <prometheus/text_serializer.h>

namespace popbridge::metrics {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// Latency buckets from 1 ms to 60 s: POP3 commands range from local answers (STAT) to
// multi-megabyte RETRs over slow links.
Histogram::BucketBoundaries latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

prometheus::Family<prometheus::Counter>& counters(prometheus::Registry& registry, const char* name,
                                                  const char* help) {
  return BuildCounter().Name(name).Help(help).Register(registry);
}

prometheus::Family<prometheus::Gauge>& gauges(prometheus::Registry& registry, const char* name,
                                              const char* help) {
  return BuildGauge().Name(name).Help(help).Register(registry);
}

// Families with two fixed children are registered twice; the registry merges them.
constexpr const char* kUpstreamConnections = "popbridge_upstream_connections_total";
constexpr const char* kUpstreamConnectionsHelp = "Upstream IMAP connections opened, by result.";
constexpr const char* kReloads = "popbridge_config_reloads_total";
constexpr const char* kReloadsHelp = "Configuration reloads, by result.";
constexpr const char* kHookRequests = "popbridge_auth_hook_requests_total";
constexpr const char* kHookRequestsHelp = "Requests to the auth_http hook, by result.";
constexpr const char* kTokenRequests = "popbridge_oauth2_token_requests_total";
constexpr const char* kTokenRequestsHelp = "Requests to the OAuth2 token endpoint, by result.";
constexpr const char* kTokenCache = "popbridge_oauth2_token_cache_total";
constexpr const char* kTokenCacheHelp =
    "Logins that needed an OAuth2 token, by whether the process had it cached.";
constexpr const char* kReadAhead = "popbridge_read_ahead_total";
constexpr const char* kReadAheadHelp =
    "Messages fetched before the client asked (limits.read_ahead), by whether a RETR used "
    "them.";

template <typename Enum, typename Child>
void fill(prometheus::Family<Child>& family, const std::string& label,
          std::array<Child*, static_cast<std::size_t>(Enum::kCount)>& out) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = &family.Add({{label, std::string(name(static_cast<Enum>(i)))}});
  }
}

}  // namespace

std::string_view name(Mechanism value) {
  static constexpr std::string_view kNames[] = {"user", "plain", "login", "xoauth2", "oauthbearer"};
  static_assert(std::size(kNames) == static_cast<std::size_t>(Mechanism::kCount));
  return kNames[static_cast<std::size_t>(value)];
}
std::string_view name(AuthResult value) {
  static constexpr std::string_view kNames[] = {
      "ok",     "bad_credentials", "upstream_unavailable", "plaintext_refused",
      "in_use", "rate_limited",    "login_delay"};
  static_assert(std::size(kNames) == static_cast<std::size_t>(AuthResult::kCount));
  return kNames[static_cast<std::size_t>(value)];
}
std::string_view name(UpstreamError value) {
  static constexpr std::string_view kNames[] = {"connect", "tls",    "timeout", "protocol",
                                                "bye",     "closed", "refused", "throttled"};
  static_assert(std::size(kNames) == static_cast<std::size_t>(UpstreamError::kCount));
  return kNames[static_cast<std::size_t>(value)];
}
std::string_view name(SessionEnd value) {
  static constexpr std::string_view kNames[] = {
      "quit",          "timeout",       "client_closed", "upstream_failed", "shutdown",
      "auth_failures", "tls_handshake", "update_failed", "protocol_error"};
  static_assert(std::size(kNames) == static_cast<std::size_t>(SessionEnd::kCount));
  return kNames[static_cast<std::size_t>(value)];
}
std::string_view name(Rejection value) {
  static constexpr std::string_view kNames[] = {"limit", "tls_handshake", "proxy_protocol",
                                                "draining"};
  static_assert(std::size(kNames) == static_cast<std::size_t>(Rejection::kCount));
  return kNames[static_cast<std::size_t>(value)];
}
std::string_view name(Direction value) {
  static constexpr std::string_view kNames[] = {"client_in", "client_out", "upstream_in",
                                                "upstream_out"};
  static_assert(std::size(kNames) == static_cast<std::size_t>(Direction::kCount));
  return kNames[static_cast<std::size_t>(value)];
}

Metrics::Metrics(prometheus::Registry& registry, const std::vector<std::string>& listeners,
                 const std::vector<std::string_view>& commands, std::string_view version,
                 std::string_view revision, std::string_view tls_library)
    : upstream_connect_ok(counters(registry, kUpstreamConnections, kUpstreamConnectionsHelp)
                              .Add({{"result", "ok"}})),
      upstream_connect_error(counters(registry, kUpstreamConnections, kUpstreamConnectionsHelp)
                                 .Add({{"result", "error"}})),
      upstream_connect_duration(BuildHistogram()
                                    .Name("popbridge_upstream_connect_duration_seconds")
                                    .Help("Time to connect, secure and log in to the upstream.")
                                    .Register(registry)
                                    .Add({}, latency_buckets())),
      upstream_active(gauges(registry, "popbridge_upstream_connections_active",
                             "Upstream IMAP connections open now.")
                          .Add({})),
      upstream_logins_reused(
          counters(registry, "popbridge_upstream_logins_reused_total",
                   "Sessions that began from what the worker kept of the same user's last "
                   "session: a logged-in IMAP connection (upstream.login_reuse), no connect "
                   "and no login upstream; or where a JMAP mailbox is, one request instead "
                   "of the session resource and Mailbox/get.")
              .Add({})),
      upstream_connections_parked(
          gauges(registry, "popbridge_upstream_connections_parked",
                 "Logged-in upstream connections waiting for their user's next session.")
              .Add({})),
      messages_retrieved(counters(registry, "popbridge_messages_retrieved_total",
                                  "Messages sent to clients in full (RETR).")
                             .Add({})),
      messages_deleted(counters(registry, "popbridge_messages_deleted_total",
                                "Messages expunged upstream after a client's QUIT.")
                           .Add({})),
      deletions_rolled_back(
          counters(registry, "popbridge_deletions_rolled_back_total",
                   "Messages a later session found marked by an unfinished UPDATE and restored.")
              .Add({})),
      uidvalidity_changes(
          counters(registry, "popbridge_uidvalidity_changes_total",
                   "Logins that found the mailbox's UIDVALIDITY changed since the user's last "
                   "login in this process: every UIDL changed, clients download everything again.")
              .Add({})),
      hook_ok(counters(registry, kHookRequests, kHookRequestsHelp).Add({{"result", "ok"}})),
      hook_error(counters(registry, kHookRequests, kHookRequestsHelp).Add({{"result", "error"}})),
      hook_duration(BuildHistogram()
                        .Name("popbridge_auth_hook_duration_seconds")
                        .Help("From asking the auth hook to its answer (or failure).")
                        .Register(registry)
                        .Add({}, latency_buckets())),
      token_ok(counters(registry, kTokenRequests, kTokenRequestsHelp).Add({{"result", "ok"}})),
      token_error(
          counters(registry, kTokenRequests, kTokenRequestsHelp).Add({{"result", "error"}})),
      token_duration(BuildHistogram()
                         .Name("popbridge_oauth2_token_duration_seconds")
                         .Help("From asking the OAuth2 token endpoint to its answer (or failure).")
                         .Register(registry)
                         .Add({}, latency_buckets())),
      token_cache_hit(counters(registry, kTokenCache, kTokenCacheHelp).Add({{"result", "hit"}})),
      token_cache_miss(counters(registry, kTokenCache, kTokenCacheHelp).Add({{"result", "miss"}})),
      retrieve_size_mismatches(
          counters(registry, "popbridge_retrieve_size_mismatch_total",
                   "RETRs whose streamed octets differed from the size LIST announced.")
              .Add({})),
      read_ahead_used(counters(registry, kReadAhead, kReadAheadHelp).Add({{"result", "used"}})),
      read_ahead_unused(counters(registry, kReadAhead, kReadAheadHelp).Add({{"result", "unused"}})),
      reload_success(counters(registry, kReloads, kReloadsHelp).Add({{"result", "ok"}})),
      reload_failure(counters(registry, kReloads, kReloadsHelp).Add({{"result", "error"}})),
      process_resident(
          gauges(registry, "process_resident_memory_bytes", "Resident memory size in bytes.")
              .Add({})),
      process_virtual(
          gauges(registry, "process_virtual_memory_bytes", "Virtual memory size in bytes.")
              .Add({})),
      process_open_fds(
          gauges(registry, "process_open_fds", "Number of open file descriptors.").Add({})),
      process_max_fds(
          gauges(registry, "process_max_fds", "Maximum number of open file descriptors.").Add({})),
      process_cpu(counters(registry, "process_cpu_seconds_total",
                           "Total user and system CPU time spent in seconds.")
                      .Add({})),
      process_start_time(gauges(registry, "process_start_time_seconds",
                                "Start time of the process since unix epoch in seconds.")
                             .Add({})),
      ready(gauges(registry, "popbridge_ready",
                   "1 while the gateway accepts sessions (what /readyz reports).")
                .Add({})),
      certificate_expiry(gauges(registry, "popbridge_certificate_expiry_timestamp_seconds",
                                "notAfter of each loaded certificate, as a Unix time.")) {
  auto& accepted = counters(registry, "popbridge_connections_accepted_total",
                            "Client connections accepted, by listener.");
  auto& active =
      gauges(registry, "popbridge_connections_active", "Client connections open now, by listener.");
  auto& handshakes = counters(registry, "popbridge_tls_handshakes_total",
                              "TLS handshakes with clients, by listener, version and result.");
  auto& handshake_duration = BuildHistogram()
                                 .Name("popbridge_tls_handshake_duration_seconds")
                                 .Help("Duration of TLS handshakes with clients.")
                                 .Register(registry);
  for (const std::string& listener : listeners) {
    listeners_.push_back(Listener{
        &accepted.Add({{"listener", listener}}), &active.Add({{"listener", listener}}),
        &handshakes.Add({{"listener", listener}, {"version", "TLSv1.2"}, {"result", "ok"}}),
        &handshakes.Add({{"listener", listener}, {"version", "TLSv1.3"}, {"result", "ok"}}),
        &handshakes.Add({{"listener", listener}, {"version", "none"}, {"result", "error"}}),
        &handshake_duration.Add({{"listener", listener}}, latency_buckets())});
  }

  auto& command_counter =
      counters(registry, "popbridge_commands_total", "POP3 commands, by command and result.");
  auto& command_duration = BuildHistogram()
                               .Name("popbridge_command_duration_seconds")
                               .Help("From reading a POP3 command to its reply being sent.")
                               .Register(registry);
  std::vector<std::string_view> all_commands = commands;
  all_commands.push_back("invalid");
  for (std::string_view verb : all_commands) {
    const std::string command(verb);
    commands_.push_back(Command{&command_counter.Add({{"command", command}, {"result", "ok"}}),
                                &command_counter.Add({{"command", command}, {"result", "error"}}),
                                &command_duration.Add({{"command", command}}, latency_buckets())});
  }

  auto& auth = counters(registry, "popbridge_auth_attempts_total",
                        "Client login attempts, by mechanism and result.");
  for (std::size_t m = 0; m < auth_.size(); ++m) {
    for (std::size_t r = 0; r < auth_[m].size(); ++r) {
      auth_[m][r] = &auth.Add({{"mechanism", std::string(name(static_cast<Mechanism>(m)))},
                               {"result", std::string(name(static_cast<AuthResult>(r)))}});
    }
  }
  fill<UpstreamError>(
      counters(registry, "popbridge_upstream_errors_total", "Upstream failures, by kind."), "kind",
      upstream_errors_);
  fill<SessionEnd>(counters(registry, "popbridge_sessions_total", "Sessions ended, by reason."),
                   "reason", sessions_);
  fill<Rejection>(counters(registry, "popbridge_connections_rejected_total",
                           "Client connections refused, by reason."),
                  "reason", rejected_);
  fill<Direction>(counters(registry, "popbridge_bytes_total", "Bytes moved, by direction."),
                  "direction", bytes_);
  gauges(registry, "popbridge_build_info", "Always 1; the labels say what is running.")
      .Add({{"version", std::string(version)},
            {"revision", std::string(revision)},
            {"tls_library", std::string(tls_library)}})
      .Set(1);
}

std::string expose(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

void Metrics::set_process(const ProcessSample& sample) {
  process_resident.Set(sample.resident_bytes);
  process_virtual.Set(sample.virtual_bytes);
  process_open_fds.Set(sample.open_fds);
  process_max_fds.Set(sample.max_fds);
  process_start_time.Set(sample.start_time_seconds);
  // A counter only grows: add what was spent since the last scrape.
  if (const double spent = sample.cpu_seconds - process_cpu.Value(); spent > 0) {
    process_cpu.Increment(spent);
  }
}

}  // namespace popbridge::metrics
