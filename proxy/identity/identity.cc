// SPDX-License-Identifier: Apache-2.0
#include "proxy/identity/identity.h"

#include <crypt.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

namespace popbridge::proxy {
namespace {

// Reads "field:field[:rest]" lines; '#' comments and blank lines are skipped. The last
// field takes the rest of the line, so a password may contain ':'.
bool read_colon_file(const std::string& path, std::size_t fields,
                     std::vector<std::vector<std::string>>& rows, std::string& error,
                     std::vector<int>* line_numbers = nullptr) {
  std::ifstream in(path);
  if (!in) {
    error = "cannot read '" + path + "'";
    return false;
  }
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (line.empty() || line[0] == '#') {
      continue;
    }
    std::vector<std::string> row;
    std::size_t start = 0;
    for (std::size_t i = 0; i + 1 < fields; ++i) {
      const std::size_t colon = line.find(':', start);
      if (colon == std::string::npos) {
        break;
      }
      row.push_back(line.substr(start, colon - start));
      start = colon + 1;
    }
    row.push_back(line.substr(start));
    bool valid = row.size() == fields;
    for (const std::string& field : row) {
      valid = valid && !field.empty();
    }
    protocol::wipe(line.data(), line.size());
    if (!valid) {
      error = path + ":" + std::to_string(number) + ": expected " + std::to_string(fields) +
              " non-empty fields separated by ':'";
      return false;
    }
    rows.push_back(std::move(row));
    if (line_numbers != nullptr) {
      line_numbers->push_back(number);
    }
  }
  return true;
}

// The hash an unknown user is checked against: the slowest kind in the file, measured,
// so a name that is not there answers no sooner than the slowest one that is (with a
// mix of yescrypt and bcrypt, an arbitrary entry leaked which names exist).
std::string slowest_hash(const std::unordered_map<std::string, std::string>& hashes) {
  std::unordered_map<std::string, const std::string*> settings;  // up to the last '$'
  for (const auto& [user, hash] : hashes) {
    settings.try_emplace(hash.substr(0, hash.rfind('$') + 1), &hash);
  }
  std::string slowest;
  auto longest = std::chrono::steady_clock::duration::zero();
  crypt_data scratch{};
  for (const auto& [setting, hash] : settings) {
    const auto started = std::chrono::steady_clock::now();
    crypt_rn("popbridge-timing-probe", hash->c_str(), &scratch, sizeof(scratch));
    const auto took = std::chrono::steady_clock::now() - started;
    if (slowest.empty() || took > longest) {
      longest = took;
      slowest = *hash;
    }
  }
  return slowest;
}

void wipe_rows(std::vector<std::vector<std::string>>& rows) {
  for (auto& row : rows) {
    for (std::string& field : row) {
      protocol::wipe(field.data(), field.size());
    }
  }
}

}  // namespace

bool read_secret(const config::SecretSource& source, protocol::Secret& out, std::string& error) {
  if (!source.env.empty()) {
    const char* value = std::getenv(source.env.c_str());
    if (value == nullptr || *value == '\0') {
      error = "environment variable '" + source.env + "' is not set";
      return false;
    }
    out = protocol::Secret(value);
    return true;
  }
  std::ifstream in(source.file);
  if (!in) {
    error = "cannot read '" + source.file + "'";
    return false;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) {
    text.pop_back();
  }
  out = protocol::Secret(text);
  protocol::wipe(text.data(), text.size());
  if (out.empty()) {
    error = "'" + source.file + "' is empty";
    return false;
  }
  return true;
}

std::shared_ptr<const Identity> load_identity(const config::Config& config, std::string& error) {
  auto identity = std::make_shared<Identity>();
  std::vector<std::vector<std::string>> rows;
  if (config.auth.mode == config::AuthMode::kUsersFile) {
    std::vector<int> lines;
    if (!read_colon_file(config.auth.users_file, 2, rows, error, &lines)) {
      return nullptr;
    }
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const std::string& hash = rows[i][1];
      const int verdict = crypt_checksalt(hash.c_str());
      if (verdict != CRYPT_SALT_OK) {
        // A Dovecot-style "{SHA512-CRYPT}$6$..." or a plain-text password would otherwise
        // be a silent, permanent [AUTH] for that user; DES and MD5 crypt are refused as
        // too weak (libxcrypt calls them legacy).
        error = config.auth.users_file + ":" + std::to_string(lines[i]) + ": user '" + rows[i][0] +
                "': not a crypt(3) hash this system supports (yescrypt $y$, " +
                "bcrypt $2b$, SHA-512 $6$, SHA-256 $5$)" +
                (!hash.empty() && hash[0] == '{' ? "; remove the {SCHEME} prefix" : "");
        return nullptr;
      }
      identity->password_hashes[rows[i][0]] = hash;
    }
    rows.clear();
    identity->slowest_hash = slowest_hash(identity->password_hashes);
  }
  const config::UpstreamLogin& login = config.upstream.login;
  if (login.mode == config::UpstreamLoginMode::kMapped) {
    if (!read_colon_file(login.credentials_file, 3, rows, error)) {
      return nullptr;
    }
    for (auto& row : rows) {
      identity->mapped[row[0]] = Identity::Mapping{row[1], protocol::Secret(row[2])};
    }
    wipe_rows(rows);
    rows.clear();
  }
  if (login.mode == config::UpstreamLoginMode::kMaster &&
      !read_secret(login.master_password, identity->master_password, error)) {
    return nullptr;
  }
  if (!config.logging.user_hash_key.empty() &&
      !read_secret(config.logging.user_hash_key, identity->user_hash_key, error)) {
    error = "logging.user_hash_key: " + error;
    return nullptr;
  }
  if (login.mode == config::UpstreamLoginMode::kOAuth2) {
    if (!login.oauth2.client_secret.empty() &&
        !read_secret(login.oauth2.client_secret, identity->oauth2_client_secret, error)) {
      return nullptr;
    }
    if (login.oauth2.grant == config::OAuth2Grant::kRefreshToken) {
      if (!read_colon_file(login.oauth2.refresh_tokens_file, 2, rows, error)) {
        return nullptr;
      }
      for (auto& row : rows) {
        identity->refresh_tokens[row[0]] = protocol::Secret(row[1]);
      }
      wipe_rows(rows);
    }
  }
  return identity;
}

}  // namespace popbridge::proxy
