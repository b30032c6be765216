// SPDX-License-Identifier: Apache-2.0
// popbridge: a POP3-to-IMAP gateway. Parses the command line and the configuration,
// then hands over to the Gateway until SIGTERM or SIGINT.
#include <openssl/crypto.h>
#include <spdlog/version.h>
#include <sys/resource.h>
#include <uv.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "config/config.h"
#include "proxy/base/log.h"
#include "proxy/server/gateway.h"
#include "proxy/server/uidl_import.h"
#include "proxy/server/version.h"

namespace {

using namespace popbridge;

config::LoadResult load(const std::string& path) {
  config::LoadResult result = config::load_config_file(path);
  for (const config::Diagnostic& warning : result.warnings) {
    std::cerr << "warning: " << warning.to_string(path) << "\n";
  }
  for (const config::Diagnostic& error : result.errors) {
    std::cerr << "error: " << error.to_string(path) << "\n";
  }
  return result;
}

void prepare_process() {
  // Each session holds two sockets: lift the soft descriptor limit to the hard one so
  // max_connections, not a distro default of 1024, is what limits the gateway.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  // A peer that resets the connection must give EPIPE on write, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"popbridge: serve POP3 clients from an IMAP mailbox"};
  std::string config_path;
  std::string log_level;
  bool check_only = false;
  bool print_config = false;
  bool version = false;
  app.add_option("-c,--config", config_path, "configuration file (YAML)");
  app.add_flag("--check-config", check_only, "validate the configuration and exit");
  app.add_flag("--print-config", print_config,
               "print the effective configuration, defaults included, and exit");
  app.add_option("--log-level", log_level, "logging.level for this run")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_flag("-V,--version", version, "print the version and exit");

  proxy::UidlImportOptions import;
  std::string import_config;
  CLI::App* uidl_import = app.add_subcommand(
      "uidl-import",
      "carry the old POP3 server's UIDLs over to upstream.uidl_map, matching messages by "
      "their headers");
  uidl_import->add_option("--config", import_config, "configuration file (YAML)")->required();
  uidl_import
      ->add_option("--source", import.source,
                   "the old server: pop3s://HOST[:995] or pop3://HOST[:110]")
      ->required();
  uidl_import->add_option("--credentials", import.credentials_file,
                          "one user<TAB>password line per user (the old server's passwords)");
  uidl_import->add_option("--user", import.user, "one user, instead of --credentials");
  uidl_import->add_option("--password-file", import.password_file,
                          "with --user: a file whose first line is the password");
  uidl_import->add_option("--source-ca", import.source_ca,
                          "CA certificates (PEM) for the old server; the system's otherwise");
  uidl_import->add_flag("--dry-run", import.dry_run, "match and report; write no map");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    // A usage error exits 2, as getopt-style tools do (CLI11's own codes are 100+).
    app.exit(error);
    return 2;
  }

  if (uidl_import->parsed()) {
    config::LoadResult loaded = load(import_config);
    if (!loaded.config) {
      return 2;
    }
    if (!log_level.empty()) {
      loaded.config->logging.level = log_level;
    }
    proxy::log::configure(loaded.config->logging);
    prepare_process();
    return proxy::run_uidl_import(*loaded.config, import);
  }
  if (version) {
    std::printf("popbridge %s (revision %s)\n  TLS: %s\n  libuv: %s\n  spdlog: %d.%d.%d\n",
                proxy::kVersion, proxy::kRevision, OpenSSL_version(OPENSSL_VERSION),
                uv_version_string(), SPDLOG_VER_MAJOR, SPDLOG_VER_MINOR, SPDLOG_VER_PATCH);
    return 0;
  }
  if (config_path.empty()) {
    std::cerr << "error: --config FILE is required (see --help)\n";
    return 2;
  }
  config::LoadResult loaded = load(config_path);
  if (!loaded.config) {
    return 1;
  }
  if (!log_level.empty()) {
    loaded.config->logging.level = log_level;
  }
  if (print_config) {
    std::cout << config::to_yaml(*loaded.config);
    return 0;
  }
  if (check_only) {
    // Load and cross-check everything start-up loads (certificate and key, CA files,
    // identity files), as `nginx -t` does, not only the YAML.
    std::string error;
    const proxy::SettingsPtr settings = proxy::make_settings(*loaded.config, error);
    if (!settings) {
      std::cerr << "error: " << config_path << ": " << error << "\n";
      return 1;
    }
    const proxy::SettingsCheck check = proxy::check_settings(*settings);
    for (const std::string& warning : check.warnings) {
      std::cerr << "warning: " << config_path << ": " << warning << "\n";
    }
    for (const std::string& problem : check.errors) {
      std::cerr << "error: " << config_path << ": " << problem << "\n";
    }
    if (!check.errors.empty()) {
      return 1;
    }
    std::cout << config_path << ": configuration is valid\n";
    return 0;
  }
  proxy::log::configure(loaded.config->logging);
  prepare_process();
  proxy::Gateway gateway(config_path, std::move(*loaded.config), log_level);
  return gateway.run();
}
