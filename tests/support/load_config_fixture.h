// SPDX-License-Identifier: Apache-2.0
// The fixture of the config loader's tests (load_*_test.cc): YAML in, diagnostics out as
// the operator reads them ("f:LINE: key.path: message"), with temporary certificate files.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"

namespace popbridge::config {

// Diagnostics as the operator sees them, so one comparison checks key path, line and message.
inline std::vector<std::string> texts(const std::vector<Diagnostic>& diagnostics) {
  std::vector<std::string> out;
  for (const Diagnostic& d : diagnostics) {
    out.push_back(d.to_string("f"));
  }
  return out;
}

inline const std::string kMissing = "/nonexistent/popbridge-test/file.pem";

class LoadConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cert_ = make_temp_file("-----BEGIN CERTIFICATE-----\n");
    key_ = make_temp_file("-----BEGIN PRIVATE KEY-----\n");
    ca_ = make_temp_file("-----BEGIN CERTIFICATE-----\n");
  }

  void TearDown() override {
    for (const std::string& path : temp_files_) {
      ::unlink(path.c_str());
    }
  }

  std::string make_temp_file(std::string_view contents) {
    std::string path = ::testing::TempDir() + "popbridge-config-test-XXXXXX";
    const int fd = ::mkstemp(path.data());
    EXPECT_GE(fd, 0);
    if (fd >= 0) {
      EXPECT_EQ(::write(fd, contents.data(), contents.size()),
                static_cast<ssize_t>(contents.size()));
      ::close(fd);
      temp_files_.push_back(path);
    }
    return path;
  }

  // The YAML below starts on the line after R"( so line numbers read naturally; $CERT, $KEY
  // and $CA become the temporary files.
  LoadResult load(std::string_view yaml) {
    std::string text(yaml.substr(yaml.starts_with('\n') ? 1 : 0));
    for (const auto& [name, value] :
         {std::pair<std::string, std::string>{"$CERT", cert_}, {"$KEY", key_}, {"$CA", ca_}}) {
      for (std::size_t at = text.find(name); at != std::string::npos; at = text.find(name)) {
        text.replace(at, name.size(), value);
      }
    }
    return load_config_string(text);
  }

  // Only the errors, expecting no config.
  std::vector<std::string> errors(std::string_view yaml) {
    const LoadResult result = load(yaml);
    EXPECT_FALSE(result.config.has_value());
    return texts(result.errors);
  }

  std::string cert_;
  std::string key_;
  std::string ca_;
  std::vector<std::string> temp_files_;
};

// Nine lines every test can extend: one TLS listener and an upstream with a readable CA.
inline constexpr std::string_view kBase = R"(
listeners:
  - name: pop3s
    address: 0.0.0.0:995
tls:
  certificate: $CERT
  private_key: $KEY
upstream:
  address: imap.example.com:993
  ca_file: $CA
)";

}  // namespace popbridge::config
