#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

namespace popbridge::metrics {

// Every metric family of the gateway, built once at start-up and passed by reference, so
// the hot path never looks anything up by name. Tests build their own on a private
// registry.
struct Metrics {
  explicit Metrics(prometheus::Registry& registry);

  prometheus::Family<prometheus::Counter>& connections_accepted;  // {listener}
  prometheus::Family<prometheus::Counter>& connections_rejected;  // {reason}
  prometheus::Gauge& connections_active;
  prometheus::Family<prometheus::Counter>& auth_attempts;  // {mechanism, result}
  prometheus::Family<prometheus::Counter>& commands;       // {command, result}
  prometheus::Family<prometheus::Counter>& upstream_errors;  // {kind}
  prometheus::Counter& messages_retrieved;
  prometheus::Counter& messages_deleted;
  prometheus::Counter& retrieve_size_mismatches;
  prometheus::Family<prometheus::Counter>& bytes;     // {direction}
  prometheus::Family<prometheus::Counter>& sessions;  // {reason}
};

// The Prometheus text exposition of everything in the registry.
std::string expose(prometheus::Registry& registry);

}  // namespace popbridge::metrics
