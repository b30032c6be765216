// SPDX-License-Identifier: Apache-2.0
// The relay subcommand: the floor a gateway cannot go below on this machine, a relay that
// only reads and writes (and, with TLS, decrypts and seals), for the cpu, short and poll
// workloads to measure in the same run.
#pragma once

#include <string>

namespace popbridge::bench {

struct RelayOptions {
  std::string target;            // HOST:PORT of the server
  std::string certificate_file;  // with key_file: clients connect with TLS
  std::string key_file;
  bool tls_to = false;  // TLS to the server (not verified: loopback)
  // The server's side wakes the relay once 64 KiB are there (SO_RCVLOWAT), or when no
  // socket at all has woken it for a millisecond: large messages in large reads, as the
  // gateway reads them (it lowers the watermark for a message's tail; the relay, knowing
  // no messages, waits that millisecond instead).
  bool large_reads = false;
};

// Listens on 127.0.0.1 (a free port, printed as "relay <port>"), and relays each accepted
// connection to a connection of its own to the target and back, in 64 KiB reads (the
// gateway's read size), until either side closes. Runs until killed.
int run_byte_relay(const RelayOptions& options);

}  // namespace popbridge::bench
