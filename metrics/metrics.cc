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
  return kNames[static_cast<std::size_t>(value)];
}
std::string_view name(AuthResult value) {
  static constexpr std::string_view kNames[] = {
      "success",           "bad_credentials", "upstream_unavailable",
      "plaintext_refused", "in_use",          "rate_limited"};
  return kNames[static_cast<std::size_t>(value)];
}
std::string_view name(UpstreamError value) {
  static constexpr std::string_view kNames[] = {"connect", "tls",    "timeout", "protocol",
                                                "bye",     "closed", "refused"};
  return kNames[static_cast<std::size_t>(value)];
}
std::string_view name(SessionEnd value) {
  static constexpr std::string_view kNames[] = {
      "quit",     "timeout",       "client_closed", "upstream_failed",
      "shutdown", "auth_failures", "tls_handshake"};
  return kNames[static_cast<std::size_t>(value)];
}
std::string_view name(Rejection value) {
  static constexpr std::string_view kNames[] = {"limit", "tls_handshake", "proxy_protocol",
                                                "draining"};
  return kNames[static_cast<std::size_t>(value)];
}
std::string_view name(Direction value) {
  static constexpr std::string_view kNames[] = {"client_in", "client_out", "upstream_in",
                                                "upstream_out"};
  return kNames[static_cast<std::size_t>(value)];
}

Metrics::Metrics(prometheus::Registry& registry, const std::vector<std::string>& listeners,
                 const std::vector<std::string_view>& commands, std::string_view version,
                 std::string_view tls_library)
    : upstream_connect_ok(BuildCounter()
                              .Name("popbridge_upstream_connections_total")
                              .Help("Upstream IMAP connections opened, by result.")
                              .Register(registry)
                              .Add({{"result", "ok"}})),
      // The registry merges a second registration of the same family.
      upstream_connect_error(BuildCounter()
                                 .Name("popbridge_upstream_connections_total")
                                 .Help("Upstream IMAP connections opened, by result.")
                                 .Register(registry)
                                 .Add({{"result", "error"}})),
      upstream_connect_duration(BuildHistogram()
                                    .Name("popbridge_upstream_connect_duration_seconds")
                                    .Help("Time to connect, secure and log in to the upstream.")
                                    .Register(registry)
                                    .Add({}, latency_buckets())),
      upstream_active(BuildGauge()
                          .Name("popbridge_upstream_connections_active")
                          .Help("Upstream IMAP connections open now.")
                          .Register(registry)
                          .Add({})),
      messages_retrieved(BuildCounter()
                             .Name("popbridge_messages_retrieved_total")
                             .Help("Messages sent to clients in full (RETR).")
                             .Register(registry)
                             .Add({})),
      messages_deleted(BuildCounter()
                           .Name("popbridge_messages_deleted_total")
                           .Help("Messages expunged upstream after a client's QUIT.")
                           .Register(registry)
                           .Add({})),
      retrieve_size_mismatches(
          BuildCounter()
              .Name("popbridge_retrieve_size_mismatch_total")
              .Help("RETRs whose streamed octets differed from the size LIST announced.")
              .Register(registry)
              .Add({})),
      reload_success(BuildCounter()
                         .Name("popbridge_config_reloads_total")
                         .Help("Configuration reloads, by result.")
                         .Register(registry)
                         .Add({{"result", "success"}})),
      reload_failure(BuildCounter()
                         .Name("popbridge_config_reloads_total")
                         .Help("Configuration reloads, by result.")
                         .Register(registry)
                         .Add({{"result", "failure"}})),
      ready(BuildGauge()
                .Name("popbridge_ready")
                .Help("1 while the gateway accepts sessions (what /readyz reports).")
                .Register(registry)
                .Add({})),
      certificate_expiry(BuildGauge()
                             .Name("popbridge_certificate_expiry_timestamp_seconds")
                             .Help("notAfter of each loaded certificate, as a Unix time.")
                             .Register(registry)) {
  auto& accepted = BuildCounter()
                       .Name("popbridge_connections_accepted_total")
                       .Help("Client connections accepted, by listener.")
                       .Register(registry);
  auto& active = BuildGauge()
                     .Name("popbridge_connections_active")
                     .Help("Client connections open now, by listener.")
                     .Register(registry);
  auto& handshakes = BuildCounter()
                         .Name("popbridge_tls_handshakes_total")
                         .Help("TLS handshakes with clients, by listener, version and result.")
                         .Register(registry);
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

  auto& command_counter = BuildCounter()
                              .Name("popbridge_commands_total")
                              .Help("POP3 commands, by command and result.")
                              .Register(registry);
  auto& command_duration = BuildHistogram()
                               .Name("popbridge_command_duration_seconds")
                               .Help("From reading a POP3 command to its reply being sent.")
                               .Register(registry);
  std::vector<std::string_view> all_commands = commands;
  all_commands.push_back("invalid");
  for (std::string_view verb : all_commands) {
    const std::string command(verb);
    commands_.push_back(Command{&command_counter.Add({{"command", command}, {"result", "ok"}}),
                                &command_counter.Add({{"command", command}, {"result", "err"}}),
                                &command_duration.Add({{"command", command}}, latency_buckets())});
  }

  auto& auth = BuildCounter()
                   .Name("popbridge_auth_attempts_total")
                   .Help("Client login attempts, by mechanism and result.")
                   .Register(registry);
  for (std::size_t m = 0; m < auth_.size(); ++m) {
    for (std::size_t r = 0; r < auth_[m].size(); ++r) {
      auth_[m][r] = &auth.Add({{"mechanism", std::string(name(static_cast<Mechanism>(m)))},
                               {"result", std::string(name(static_cast<AuthResult>(r)))}});
    }
  }
  fill<UpstreamError>(BuildCounter()
                          .Name("popbridge_upstream_errors_total")
                          .Help("Upstream IMAP failures, by kind.")
                          .Register(registry),
                      "kind", upstream_errors_);
  fill<SessionEnd>(BuildCounter()
                       .Name("popbridge_sessions_total")
                       .Help("Sessions ended, by reason.")
                       .Register(registry),
                   "reason", sessions_);
  fill<Rejection>(BuildCounter()
                      .Name("popbridge_connections_rejected_total")
                      .Help("Client connections refused, by reason.")
                      .Register(registry),
                  "reason", rejected_);
  fill<Direction>(BuildCounter()
                      .Name("popbridge_bytes_total")
                      .Help("Bytes moved, by direction.")
                      .Register(registry),
                  "direction", bytes_);
  BuildGauge()
      .Name("popbridge_build_info")
      .Help("Always 1; the labels say what is running.")
      .Register(registry)
      .Add({{"version", std::string(version)}, {"tls_library", std::string(tls_library)}})
      .Set(1);
}

std::string expose(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

}  // namespace popbridge::metrics
