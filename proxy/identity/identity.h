// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "config/config.h"
#include "protocol/common/secret.h"
#include "proxy/base/upstream_credentials.h"

namespace popbridge::proxy {

// The files and secrets behind client authentication and upstream login, read when the
// configuration is (re)loaded, so a session never touches the disk.
struct Identity {
  struct Mapping {
    std::string upstream_user;
    protocol::Secret password;
  };
  std::unordered_map<std::string, std::string> password_hashes;  // auth.users_file
  std::string slowest_hash;                         // what an unknown user is checked against
  std::unordered_map<std::string, Mapping> mapped;  // upstream.login.credentials_file
  std::unordered_map<std::string, protocol::Secret> refresh_tokens;
  protocol::Secret master_password;
  protocol::Secret oauth2_client_secret;
  protocol::Secret user_hash_key;  // logging.user_hash_key_*
};

// Reads what the configuration names; null and an error naming the file and line on a
// malformed file.
std::shared_ptr<const Identity> load_identity(const config::Config& config, std::string& error);

// A secret from its file (trailing newline removed) or environment variable.
bool read_secret(const config::SecretSource& source, protocol::Secret& out, std::string& error);

}  // namespace popbridge::proxy
