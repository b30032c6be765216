#include "metrics/metrics.h"

#include <prometheus/text_serializer.h>

namespace popbridge::metrics {
namespace {

prometheus::Family<prometheus::Counter>& counter(prometheus::Registry& registry,
                                                 const std::string& name,
                                                 const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}

}  // namespace

Metrics::Metrics(prometheus::Registry& registry)
    : connections_accepted(counter(registry, "popbridge_connections_accepted_total",
                                   "Client connections accepted, by listener.")),
      connections_rejected(counter(registry, "popbridge_connections_rejected_total",
                                   "Client connections refused, by reason.")),
      connections_active(prometheus::BuildGauge()
                             .Name("popbridge_connections_active")
                             .Help("Client connections open now.")
                             .Register(registry)
                             .Add({})),
      auth_attempts(counter(registry, "popbridge_auth_attempts_total",
                            "Client login attempts, by mechanism and result.")),
      commands(counter(registry, "popbridge_commands_total", "POP3 commands, by command and result.")),
      upstream_errors(counter(registry, "popbridge_upstream_errors_total",
                              "Upstream IMAP failures, by kind.")),
      messages_retrieved(counter(registry, "popbridge_messages_retrieved_total",
                                 "Messages sent to clients in full (RETR).")
                             .Add({})),
      messages_deleted(counter(registry, "popbridge_messages_deleted_total",
                               "Messages expunged upstream after a client's QUIT.")
                           .Add({})),
      retrieve_size_mismatches(
          counter(registry, "popbridge_retrieve_size_mismatch_total",
                  "RETRs whose streamed octets differed from the size LIST announced.")
              .Add({})),
      bytes(counter(registry, "popbridge_bytes_total", "Bytes moved, by direction.")),
      sessions(counter(registry, "popbridge_sessions_total", "Sessions ended, by reason.")) {}

std::string expose(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

}  // namespace popbridge::metrics
