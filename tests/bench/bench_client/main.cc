// SPDX-License-Identifier: Apache-2.0
// pop3_bench_client: the client side of tests/bench/run_bench.py.
//
// A small blocking POP3 and IMAP client. It measures how fast a message comes through the
// gateway (retr) against a direct IMAP fetch of the same message from the same upstream
// (imap-fetch), and holds many authenticated POP3 sessions open (idle-sessions) so the
// runner can read the gateway's memory. Blocking sockets keep it simple: the client is
// not what is measured, it only has to be much faster than the gateway, and a read
// timeout turns a stalled server into an error message instead of a hang.
//
// Every retrieval mode first fetches the message once untimed, hashing the octets a mail
// client would store (dot-unstuffed for POP3, the literal for IMAP), so the runner can
// check the gateway delivers the right bytes; that run also warms the upstream's caches
// for both paths alike. The timed runs only count octets.
//
// Results go to stdout as one "key=value ..." line, parsed by run_bench.py.
//
// This file holds the command line; each subcommand lives in its own file
// (one_message, mailbox_runs, short_sessions, idle_sessions), on top of the POP3 and IMAP
// clients (pop3_client, imap_client) and the connection they share (connection). The relay
// subcommand (byte_relay) is no client: it is the cpu workload's floor reference.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

#include "tests/bench/bench_client/byte_relay.h"
#include "tests/bench/bench_client/connection.h"
#include "tests/bench/bench_client/failure.h"
#include "tests/bench/bench_client/idle_sessions.h"
#include "tests/bench/bench_client/mailbox_runs.h"
#include "tests/bench/bench_client/one_message.h"
#include "tests/bench/bench_client/short_sessions.h"

namespace {

using popbridge::bench::ConnectOptions;
using popbridge::bench::Failure;

void add_connect_options(CLI::App& app, ConnectOptions& options, const char* address_flag,
                         const char* address_help) {
  app.add_option(address_flag, options.address, address_help)->required();
  app.add_flag("--tls", options.tls, "TLS from the first byte (POP3S / IMAPS)");
  app.add_option("--ca", options.ca_file,
                 "CA file to verify the server certificate with (default: no verification)");
  app.add_option("--server-name", options.server_name, "SNI and verified name")
      ->capture_default_str();
  app.add_option("--user", options.user, "user name")->required();
  app.add_option("--pass", options.password, "password")->required();
  app.add_option("--timeout", options.timeout_s, "seconds a read may wait before failing")
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  // A server that resets the connection must give EPIPE, not kill the client.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"POP3/IMAP benchmark client for popbridge (see tests/bench/README.md)"};
  app.require_subcommand(1);

  ConnectOptions retr_options;
  unsigned message = 1;
  unsigned retr_repeat = 5;
  CLI::App* retr = app.add_subcommand("retr", "RETR one message repeatedly through POP3");
  add_connect_options(*retr, retr_options, "--pop3", "POP3 server HOST:PORT");
  retr->add_option("--message", message, "message number")->capture_default_str();
  retr->add_option("--repeat", retr_repeat, "timed retrievals")->capture_default_str();

  ConnectOptions fetch_options;
  unsigned uid = 1;
  unsigned fetch_repeat = 5;
  CLI::App* fetch =
      app.add_subcommand("imap-fetch", "UID FETCH BODY.PEEK[] one message repeatedly");
  add_connect_options(*fetch, fetch_options, "--imap", "IMAP server HOST:PORT");
  fetch->add_option("--uid", uid, "message UID")->capture_default_str();
  fetch->add_option("--repeat", fetch_repeat, "timed fetches")->capture_default_str();

  ConnectOptions idle_options;
  unsigned count = 1000;
  unsigned parallel = 50;
  CLI::App* idle = app.add_subcommand("idle-sessions",
                                      "hold COUNT authenticated POP3 sessions until stdin closes");
  add_connect_options(*idle, idle_options, "--pop3", "POP3 server HOST:PORT");
  idle->add_option("--count", count, "sessions")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000000u));
  idle->add_option("--parallel", parallel, "logins in flight at once")
      ->capture_default_str()
      ->check(CLI::Range(1u, 10000u));

  // Many messages, one session per timed run.
  ConnectOptions many_options;
  unsigned many_count = 20;
  unsigned many_repeat = 5;
  bool many_check = false;
  std::uint64_t many_expect = 0;
  auto add_many = [&](CLI::App& sub, const char* flag, const char* help) {
    add_connect_options(sub, many_options, flag, help);
    sub.add_option("--messages", many_count, "retrieve messages 1..N (the first N UIDs for IMAP)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000000u));
    sub.add_option("--repeat", many_repeat, "timed sessions")->capture_default_str();
    sub.add_flag("--check", many_check,
                 "first one untimed session hashing every message (prints sha256)");
    sub.add_option("--expect-octets", many_expect,
                   "fail unless every session retrieves this many message octets");
  };
  CLI::App* retr_many = app.add_subcommand(
      "retr-many", "sessions of RETR 1..N through POP3 (login and QUIT untimed)");
  add_many(*retr_many, "--pop3", "POP3 server HOST:PORT");
  CLI::App* fetch_many = app.add_subcommand(
      "imap-fetch-many", "sessions of UID FETCH uid BODY.PEEK[], one command at a time");
  add_many(*fetch_many, "--imap", "IMAP server HOST:PORT");

  // Short sessions from concurrent clients.
  ConnectOptions short_options;
  std::string short_pop3;
  std::string short_imap;
  unsigned short_clients = 64;
  double short_duration = 10;
  unsigned short_max = 0;
  unsigned short_count = 20;
  unsigned short_retrieve = std::numeric_limits<unsigned>::max();  // all
  unsigned short_users = 0;
  std::string short_sha;
  CLI::App* short_sub = app.add_subcommand(
      "short-sessions", "CLIENTS concurrent clients making short sessions back to back");
  auto* pop3_opt = short_sub->add_option("--pop3", short_pop3, "POP3 server HOST:PORT");
  short_sub->add_option("--imap", short_imap, "IMAP server HOST:PORT")->excludes(pop3_opt);
  short_sub->add_flag("--tls", short_options.tls, "TLS from the first byte (POP3S / IMAPS)");
  short_sub->add_option("--ca", short_options.ca_file, "CA file to verify the server with");
  short_sub->add_option("--server-name", short_options.server_name, "SNI and verified name")
      ->capture_default_str();
  short_sub->add_option("--user", short_options.user, "user name (prefix with --users)")
      ->required();
  short_sub->add_option("--pass", short_options.password, "password (every user's)")->required();
  short_sub->add_option("--timeout", short_options.timeout_s, "seconds a read may wait")
      ->capture_default_str();
  short_sub->add_option("--clients", short_clients, "concurrent clients")
      ->capture_default_str()
      ->check(CLI::Range(1u, 10000u));
  short_sub->add_option("--duration", short_duration, "seconds to start new sessions for")
      ->capture_default_str();
  short_sub->add_option("--sessions", short_max, "stop after this many sessions (0: --duration)")
      ->capture_default_str();
  short_sub->add_option("--messages", short_count, "messages every INBOX holds")
      ->capture_default_str();
  short_sub->add_option("--retrieve", short_retrieve,
                        "messages each session retrieves, the first ones (default: all; 0: polls "
                        "that find nothing new)");
  short_sub
      ->add_option("--users", short_users,
                   "client i logs in as USER(i mod N + 1); 0: everyone as USER")
      ->capture_default_str();
  short_sub->add_option("--expect-sha256", short_sha,
                        "SHA-256 of one session's messages, concatenated");

  // The floor for the cpu workload: a relay that only reads and writes.
  popbridge::bench::RelayOptions relay_options;
  CLI::App* relay_sub = app.add_subcommand(
      "relay", "relay connections to a server, reading and writing only, until killed");
  relay_sub->add_option("--to", relay_options.target, "server HOST:PORT")->required();
  auto* relay_cert = relay_sub->add_option("--tls-certificate", relay_options.certificate_file,
                                           "clients connect with TLS: this certificate chain");
  relay_sub->add_option("--tls-key", relay_options.key_file, "and this key")->needs(relay_cert);
  relay_cert->needs("--tls-key");
  relay_sub->add_flag("--tls-to", relay_options.tls_to, "TLS to the server");
  relay_sub->add_flag("--large-reads", relay_options.large_reads,
                      "wake for the server once 64 KiB are there, or after 1 ms");

  CLI11_PARSE(app, argc, argv);
  try {
    if (retr->parsed()) {
      return popbridge::bench::run_retr(retr_options, message, retr_repeat);
    }
    if (fetch->parsed()) {
      return popbridge::bench::run_imap_fetch(fetch_options, uid, fetch_repeat);
    }
    if (retr_many->parsed() || fetch_many->parsed()) {
      const bool imap = fetch_many->parsed();
      return popbridge::bench::run_mailbox(imap ? "imap-fetch-many" : "retr-many", imap,
                                           many_options, many_count, many_repeat, many_check,
                                           many_expect);
    }
    if (relay_sub->parsed()) {
      return popbridge::bench::run_byte_relay(relay_options);
    }
    if (short_sub->parsed()) {
      if (short_pop3.empty() == short_imap.empty()) {
        throw Failure("short-sessions needs --pop3 or --imap");
      }
      short_options.address = short_imap.empty() ? short_pop3 : short_imap;
      return popbridge::bench::run_short_sessions(!short_imap.empty(), short_options, short_clients,
                                                  short_duration, short_max, short_count,
                                                  short_retrieve, short_users, short_sha);
    }
    return popbridge::bench::run_idle_sessions(idle_options, count, parallel);
  } catch (const Failure& e) {
    std::fprintf(stderr, "pop3_bench_client: %s\n", e.what());
    return 1;
  }
}
