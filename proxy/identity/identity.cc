#include "proxy/identity/identity.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

namespace popbridge::proxy {
namespace {

// Reads "field:field[:rest]" lines; '#' comments and blank lines are skipped. The last
// field takes the rest of the line, so a password may contain ':'.
bool read_colon_file(const std::string& path, std::size_t fields,
                     std::vector<std::vector<std::string>>& rows, std::string& error) {
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
  }
  return true;
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
    if (!read_colon_file(config.auth.users_file, 2, rows, error)) {
      return nullptr;
    }
    for (auto& row : rows) {
      identity->password_hashes[row[0]] = row[1];
    }
    rows.clear();
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
