// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>

#include "config/config.h"

namespace popbridge::proxy {

// popbridge uidl-import: for each user, the old POP3 server's UIDLs matched to the
// messages the upstream now holds, written to upstream.uidl_map (a directory, or the
// mailbox's METADATA).
struct UidlImportOptions {
  std::string source;            // pop3s://host:995 or pop3://host:110
  std::string credentials_file;  // user<TAB>password per line
  std::string user;              // or one user, with password_file
  std::string password_file;
  std::string source_ca;  // CAs for the old server's certificate; the system's otherwise
  bool dry_run = false;   // match and report, write nothing
};

// Prints one line per user on stdout, progress and problems on stderr. 0 when every user
// was imported; 1 when a login (or anything else) failed for at least one; 2 on a usage
// or set-up error.
int run_uidl_import(const config::Config& config, const UidlImportOptions& options);

}  // namespace popbridge::proxy
