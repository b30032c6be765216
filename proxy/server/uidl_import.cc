// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/uidl_import.h"

#include <fcntl.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <vector>

#include "protocol/common/header_field.h"
#include "protocol/pop3/migration_match.h"
#include "protocol/pop3/pop3_command.h"
#include "protocol/pop3/uidl_map.h"
#include "proxy/base/deferred_delete.h"
#include "proxy/base/log.h"
#include "proxy/identity/authenticator.h"
#include "proxy/mailstore/mail_store.h"
#include "proxy/pop3/uidl_map_file.h"
#include "proxy/server/pop3_source.h"
#include "proxy/server/server.h"

namespace popbridge::proxy {
namespace {

constexpr std::size_t kProgressEvery = 500;  // messages between progress lines
constexpr std::size_t kMaxHeader = 256 * 1024;

struct Account {
  std::string user;
  protocol::Secret password;
};

bool read_accounts(const UidlImportOptions& options, std::vector<Account>& accounts) {
  if (!options.user.empty()) {
    std::ifstream in(options.password_file);
    std::string password;
    if (!in || !std::getline(in, password) || password.empty()) {
      std::cerr << "error: --password-file " << options.password_file
                << ": cannot read a password from its first line\n";
      return false;
    }
    accounts.push_back({options.user, protocol::Secret(password)});
    return true;
  }
  std::ifstream in(options.credentials_file);
  if (!in) {
    std::cerr << "error: --credentials " << options.credentials_file << ": cannot read it\n";
    return false;
  }
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (line.empty() || line.front() == '#') {
      continue;
    }
    const std::size_t tab = line.find('\t');
    if (tab == 0 || tab == std::string::npos || tab + 1 == line.size()) {
      std::cerr << "error: --credentials " << options.credentials_file << ":" << number
                << ": expected user<TAB>password\n";
      return false;
    }
    accounts.push_back({line.substr(0, tab), protocol::Secret(line.substr(tab + 1))});
  }
  if (accounts.empty()) {
    std::cerr << "error: --credentials " << options.credentials_file << ": no users\n";
    return false;
  }
  return true;
}

// Written beside the final name, then renamed over it, so a reader (a gateway logging a
// user in) sees the old map or the new one, never half of one.
bool write_atomically(const std::string& path, const std::string& text, std::string& error) {
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = "cannot create " + temporary;
    return false;
  }
  std::string_view rest = text;
  while (!rest.empty()) {
    const ssize_t written = ::write(fd, rest.data(), rest.size());
    if (written <= 0) {
      ::close(fd);
      ::unlink(temporary.c_str());
      error = "cannot write " + temporary;
      return false;
    }
    rest.remove_prefix(static_cast<std::size_t>(written));
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(temporary.c_str(), path.c_str()) != 0) {
    ::unlink(temporary.c_str());
    error = "cannot replace " + path;
    return false;
  }
  return true;
}

// The upstream side of one user: the mailbox through the MailStore, as a session sees it.
class UpstreamSide final : MailStore::Observer, MessageSink {
 public:
  UpstreamSide(uv_loop_t* loop, const Settings& settings, metrics::Metrics& metrics,
               TokenSource* tokens)
      : loop_(loop), settings_(settings), metrics_(metrics), tokens_(tokens) {}
  ~UpstreamSide() override {
    if (store_) {
      store_->close(true);
      DeferredDelete::of(loop_).retire(std::move(store_));
    }
  }
  UpstreamSide(const UpstreamSide&) = delete;
  UpstreamSide& operator=(const UpstreamSide&) = delete;

  bool read(const Account& account, std::vector<protocol::MigrationMessage>& messages,
            std::uint32_t& uidvalidity, std::string& error) {
    const config::Config& config = settings_.config;
    Authenticator authenticator(loop_, config, *settings_.identity, nullptr, tokens_, metrics_,
                                "uidl-import");
    std::optional<Authenticator::Outcome> planned;
    authenticator.upstream_credentials(account.user, account.password,
                                       UpstreamCredentials::Mechanism::kPassword,
                                       [&](Authenticator::Outcome outcome) { planned = outcome; });
    if (!run_until([&] { return planned.has_value(); })) {
      error = "no upstream credentials: " + lost_;
      return false;
    }
    if (const auto* refused = std::get_if<LoginRefusal>(&*planned)) {
      error = "upstream login: " + (refused->text.empty() ? "refused" : refused->text);
      return false;
    }
    MailStore::Observer& observer = *this;
    store_ = settings_.make_store(loop_, config.upstream, settings_.upstream_tls.get(), metrics_,
                                  observer, nullptr);
    OpenRequest request;
    request.credentials = std::get<LoginPlan>(*planned).credentials;
    request.client_address = "uidl-import";
    request.session_id = "uidl-import";
    std::optional<StoreResult> opened;
    StoreSnapshot snapshot;
    store_->open(std::move(request), [&](const StoreResult& result, StoreSnapshot got) {
      opened = result;
      snapshot = std::move(got);
    });
    if (!run_until([&] { return opened.has_value(); }) || !opened->ok()) {
      error = "upstream login or mailbox: " +
              (opened ? std::string(name(opened->status)) + ": " + opened->detail
                      : "connection lost: " + lost_);
      return false;
    }
    uidvalidity = snapshot.uidvalidity;
    messages.clear();
    for (std::size_t i = 0; i < snapshot.messages.size(); ++i) {
      const StoreMessage& message = snapshot.messages[i];
      header_.clear();
      std::optional<StoreResult> fetched;
      store_->fetch(message.uid, message.size, FetchPart::kTop, *this,
                    [&](const StoreResult& result) { fetched = result; });
      if (!run_until([&] { return fetched.has_value(); })) {
        error = "upstream: connection lost during a header fetch: " + lost_;
        return false;
      }
      if (fetched->status == StoreStatus::kMissing) {
        continue;  // expunged meanwhile: nothing to map
      }
      if (!fetched->ok()) {
        error = "upstream: " + std::string(name(fetched->status)) + ": " + fetched->detail;
        return false;
      }
      messages.push_back({std::to_string(message.uid), message.size,
                          protocol::migration_header_hash(header_),
                          protocol::first_header_field(header_, "Message-ID").value_or("")});
      if ((i + 1) % kProgressEvery == 0) {
        std::cerr << account.user << ": upstream: " << (i + 1) << "/" << snapshot.messages.size()
                  << " headers read\n";
      }
    }
    return true;
  }

  // upstream.uidl_map.store: metadata: the map goes to the mailbox just read.
  bool save(std::string text, std::string& error) {
    std::optional<StoreResult> saved;
    store_->save_uidl_map(std::move(text), [&](const StoreResult& result) { saved = result; });
    if (!run_until([&] { return saved.has_value(); })) {
      error = "upstream: connection lost while saving the map: " + lost_;
      return false;
    }
    if (!saved->ok()) {
      error = "upstream: " + saved->detail;
      return false;
    }
    return true;
  }

 private:
  void on_store_lost(const StoreResult& why) override { lost_ = why.detail; }
  void on_message_begin(std::optional<std::uint64_t>) override {}
  bool on_message_data(std::string_view chunk) override {
    header_.append(chunk);
    return header_.find("\r\n\r\n") == std::string::npos &&
           header_.find("\n\n") == std::string::npos && header_.size() < kMaxHeader;
  }

  template <typename Condition>
  bool run_until(Condition condition) {
    while (!condition() && lost_.empty()) {
      if (uv_run(loop_, UV_RUN_ONCE) == 0 && !condition()) {
        return false;  // nothing left that could make it true
      }
    }
    return condition();
  }

  uv_loop_t* loop_;
  const Settings& settings_;
  metrics::Metrics& metrics_;
  TokenSource* tokens_;
  std::shared_ptr<MailStore> store_;
  std::string header_;
  std::string lost_;
};

bool read_old_side(const Pop3SourceUrl& url, SSL_CTX* tls, const Account& account,
                   std::vector<protocol::MigrationMessage>& messages, std::string& error) {
  Pop3Source source(url, tls, std::chrono::seconds(60));
  std::vector<SourceMessage> listed;
  if (!source.connect(error) || !source.login(account.user, account.password, error) ||
      !source.list(listed, error)) {
    return false;
  }
  messages.clear();
  std::string header;
  for (std::size_t i = 0; i < listed.size(); ++i) {
    if (!source.header(i + 1, header, error)) {
      return false;
    }
    messages.push_back({listed[i].uidl, listed[i].size, protocol::migration_header_hash(header),
                        protocol::first_header_field(header, "Message-ID").value_or("")});
    if ((i + 1) % kProgressEvery == 0) {
      std::cerr << account.user << ": old server: " << (i + 1) << "/" << listed.size()
                << " headers read\n";
    }
  }
  source.quit();
  return true;
}

}  // namespace

int run_uidl_import(const config::Config& config, const UidlImportOptions& options) {
  if (options.user.empty() == options.credentials_file.empty() ||
      options.user.empty() != options.password_file.empty()) {
    std::cerr << "error: give --credentials FILE, or --user NAME with --password-file FILE\n";
    return 2;
  }
  const std::string& directory = config.upstream.uidl_map.directory;
  if (!config.upstream.uidl_map.enabled() && !options.dry_run) {
    std::cerr << "error: upstream.uidl_map is not set: there is nowhere to write the maps "
                 "(or use --dry-run)\n";
    return 2;
  }
  std::string error;
  std::optional<Pop3SourceUrl> url = parse_pop3_source_url(options.source, error);
  if (!url) {
    std::cerr << "error: " << error << "\n";
    return 2;
  }
  TlsContextResult source_tls = make_client_context(
      options.source_ca.empty() ? "/etc/ssl/certs/ca-certificates.crt" : options.source_ca, true);
  if (!source_tls.context) {
    std::cerr << "error: --source-ca: " << source_tls.error << "\n";
    return 2;
  }
  std::vector<Account> accounts;
  if (!read_accounts(options, accounts)) {
    return 2;
  }
  const SettingsPtr settings = make_settings(config, error);
  if (!settings) {
    std::cerr << "error: " << error << "\n";
    return 2;
  }

  uv_loop_t loop{};
  uv_loop_init(&loop);
  int status = 0;
  {
    DeferredDelete deferred_delete(&loop);
    prometheus::Registry registry;
    std::vector<std::string_view> verbs;
    for (std::size_t verb = 0; verb < protocol::kPop3VerbCount; ++verb) {
      verbs.push_back(protocol::verb_name(static_cast<protocol::Pop3Verb>(verb)));
    }
    metrics::Metrics metrics(registry, {"uidl-import"}, verbs, "", "", "");
    TokenCache token_cache;
    std::unique_ptr<TokenSource> tokens;
    if (config.upstream.login.mode == config::UpstreamLoginMode::kOAuth2) {
      tokens =
          std::make_unique<TokenSource>(&loop, config.upstream.login.oauth2, *settings->identity,
                                        token_cache, settings->egress_proxy, &metrics);
    }
    for (const Account& account : accounts) {
      std::vector<protocol::MigrationMessage> old_messages;
      std::vector<protocol::MigrationMessage> new_messages;
      std::uint32_t uidvalidity = 0;
      if (!read_old_side(*url, source_tls.context.get(), account, old_messages, error)) {
        std::cout << "user=" << account.user << " result=error side=old reason=\"" << error
                  << "\"\n";
        status = 1;
        continue;
      }
      // Kept open until the map is saved: with store: metadata it goes to this mailbox.
      auto upstream = std::make_unique<UpstreamSide>(&loop, *settings, metrics, tokens.get());
      if (!upstream->read(account, new_messages, uidvalidity, error)) {
        std::cout << "user=" << account.user << " result=error side=upstream reason=\"" << error
                  << "\"\n";
        status = 1;
        continue;
      }
      const protocol::MigrationMatch match =
          protocol::match_migrated_messages(old_messages, new_messages);
      protocol::UidlMap map;
      map.uidvalidity = uidvalidity;
      for (const auto& [old_index, new_index] : match.pairs) {
        map.uidls[static_cast<std::uint32_t>(std::stoul(new_messages[new_index].id))] =
            old_messages[old_index].id;
      }
      std::string written = "none";
      if (!options.dry_run && config.upstream.uidl_map.metadata) {
        if (!upstream->save(protocol::format_uidl_map(map), error)) {
          std::cout << "user=" << account.user << " result=error side=map reason=\"" << error
                    << "\"\n";
          status = 1;
          continue;
        }
        written = "metadata";
      } else if (!options.dry_run) {
        const std::string path = directory + "/" + uidl_map_file_name(account.user);
        if (!write_atomically(path, protocol::format_uidl_map(map), error)) {
          std::cout << "user=" << account.user << " result=error side=map reason=\"" << error
                    << "\"\n";
          status = 1;
          continue;
        }
        written = path;
      }
      std::cout << "user=" << account.user << " result=ok matched=" << match.pairs.size()
                << " unmatched_old=" << match.unmatched_old.size()
                << " unmatched_new=" << match.unmatched_new.size()
                << " ambiguous=" << match.ambiguous << " uidvalidity=" << uidvalidity
                << " map=" << written << "\n";
      for (std::size_t index : match.unmatched_old) {
        std::cerr << account.user << ": not matched: old UIDL " << old_messages[index].id << " ("
                  << old_messages[index].size << " octets)\n";
      }
    }
    tokens.reset();
  }
  // The goodbyes to the upstream finish, then every handle is closed.
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return status;
}

}  // namespace popbridge::proxy
