// SPDX-License-Identifier: Apache-2.0
// The configuration's sections: which keys each has, how each value is read and checked,
// and the checks across sections.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "config/keys.h"
#include "config/loader.h"

namespace popbridge::config {
namespace detail {

LoadResult Loader::run(const YAML::Node& root) {
  LoadResult result;
  if (root.IsNull()) {
    error("", 0, "the document is empty");
  } else if (!root.IsMap()) {
    error("", line_of(root), "expected a map, got " + describe(root));
  } else {
    const Value doc{root, "", line_of(root), line_of(root)};
    MapReader top(*this, doc, kTopKeys);
    read_listeners(top.required("listeners"));
    read_tls(top.get("tls"), top.line());
    read_upstream(top.required("upstream"));
    read_auth(top.get("auth"));
    read_pop3(top.get("pop3"));
    read_limits(top.get("limits"));
    read_logging(top.get("logging"));
    read_metrics(top.get("metrics"));
    read_workers(top.get("workers"));
    if (config_.auth.mode == AuthMode::kPassthrough &&
        config_.upstream.login.mode != UpstreamLoginMode::kPassthrough) {
      // Nobody would check the client's password: anyone could read any mailbox.
      error("upstream.login.mode", login_mode_line_,
            "a master, mapped or oauth2 upstream login needs the gateway to check clients "
            "itself: set auth.mode to users_file or http");
    }
    if (!config_.auth.allow_plaintext) {
      for (const auto& [path, line] : plaintext_listeners_) {
        warn(path, line,
             "no client can log in here: the listener has no TLS and auth.allow_plaintext is "
             "false");
      }
    }
  }
  // The sections are read in a fixed order; sorting gives the order of the file.
  const auto by_line = [](const Diagnostic& a, const Diagnostic& b) { return a.line < b.line; };
  std::stable_sort(errors_.begin(), errors_.end(), by_line);
  std::stable_sort(warnings_.begin(), warnings_.end(), by_line);
  if (errors_.empty()) {
    result.config = std::move(config_);
  }
  result.errors = std::move(errors_);
  result.warnings = std::move(warnings_);
  return result;
}

void Loader::read_listeners(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  if (!v->node.IsSequence()) {
    error(v->path, v->line, "expected a sequence of listeners, got " + describe(v->node));
    return;
  }
  if (v->node.size() == 0) {
    error(v->path, v->line, "must list at least one listener");
    return;
  }
  std::size_t index = 0;
  for (const YAML::Node& node : v->node) {
    const std::string path = v->path + "[" + std::to_string(index++) + "]";
    // yaml-cpp marks an empty item at the token after it; the sequence is the better guess.
    const int line = node.IsNull() ? v->line : line_of(node);
    read_listener(Value{node, path, line, line});
  }
}

void Loader::read_listener(const Value& item) {
  if (!item.node.IsMap()) {
    error(item.path, item.line, "expected a map, got " + describe(item.node));
    return;
  }
  MapReader m(*this, item, kListenerKeys);
  Listener listener;

  const std::optional<Value> name = m.required("name");
  if (name && read_string(name, listener.name)) {
    // The name is a log field and a metric label; keeping it to a token avoids quoting both.
    const bool token = std::all_of(listener.name.begin(), listener.name.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_' || c == '.';
    });
    if (!token || listener.name.size() > 64) {
      error(name->path, name->line,
            "a listener name is at most 64 letters, digits, '-', '_' or '.', got " +
                quoted(listener.name));
    } else {
      for (std::size_t i = 0; i < config_.listeners.size(); ++i) {
        if (config_.listeners[i].name == listener.name) {
          error(name->path, name->line,
                "duplicate listener name " + quoted(listener.name) + " (also used by listeners[" +
                    std::to_string(i) + "])");
          break;
        }
      }
    }
  }

  const std::optional<Value> address = m.required("address");
  if (address && read_endpoint(address, listener.address)) {
    // Every worker binds with SO_REUSEPORT, so a repeated address would bind without error
    // and silently share connections between two listeners.
    const auto [it, inserted] = addresses_.emplace(lower(listener.address.to_string()), item.path);
    if (!inserted) {
      error(address->path, address->line,
            "duplicate listen address " + quoted(listener.address.to_string()) + " (also used by " +
                it->second + ")");
    }
  }

  const std::optional<Value> tls = m.get("tls");
  if (read_choice(tls, kTlsModes, listener.tls)) {
    if (listener.tls == TlsMode::kNone) {
      plaintext_listeners_.emplace_back(tls->path, tls->line);
    } else if (first_tls_listener_.empty()) {
      first_tls_listener_ = item.path;
    }
  } else {
    tls_need_unknown_ = true;
  }
  read_bool(m.get("proxy_protocol"), listener.proxy_protocol);
  config_.listeners.push_back(std::move(listener));
}

void Loader::read_tls(const std::optional<Value>& v, int root_line) {
  const bool needed = !first_tls_listener_.empty();
  if (!v) {
    if (needed) {
      error(
          "tls", root_line,
          "required key is missing (" + first_tls_listener_ + " uses TLS and needs a certificate)");
    }
    return;
  }
  std::optional<MapReader> m = open_map(v, kTlsKeys);
  if (!m) {
    return;
  }
  TlsSettings& tls = config_.tls;
  read_choice(m->get("min_version"), kTlsVersions, tls.min_version);
  if (!needed) {
    // Still checked for typos, but the files are not loaded, so they need not exist; the
    // struct's contract is that the paths are empty when no listener needs them.
    std::string ignored;
    const std::optional<Value> certificate = m->get("certificate");
    read_string(certificate, ignored);
    read_string(m->get("private_key"), ignored);
    if (!tls_need_unknown_ && (certificate || m->get("private_key"))) {
      warn(v->path, v->key_line, "ignored: no listener uses implicit or starttls");
    }
    return;
  }
  for (const auto& [key, out] :
       {std::pair<std::string_view, std::string*>{"certificate", &tls.certificate},
        std::pair<std::string_view, std::string*>{"private_key", &tls.private_key}}) {
    const std::optional<Value> file = m->required(key);
    if (file && read_string(file, *out)) {
      check_readable(file->path, file->line, *out);
    }
  }
}

void Loader::read_upstream(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kUpstreamKeys);
  if (!m) {
    return;
  }
  Upstream& up = config_.upstream;
  read_choice(m->get("protocol"), kUpstreamProtocols, up.protocol);
  const bool jmap = up.protocol == UpstreamProtocol::kJmap;
  std::optional<Value> address;
  std::optional<Value> tls;
  bool address_ok = false;
  bool tls_ok = false;
  if (jmap) {
    address_ok = tls_ok = read_jmap_url(*m, up);
  } else {
    address = m->required("address");
    address_ok = address && read_endpoint(address, up.address);
    tls = m->get("tls");
    tls_ok = read_choice(tls, kTlsModes, up.tls);
    if (const std::optional<Value> url = m->get("url")) {
      error(url->path, url->line,
            "used only with protocol: jmap (an IMAP upstream has an address)");
    }
    if (const std::optional<Value> remember = m->get("remember_session")) {
      error(remember->path, remember->key_line,
            "used only with protocol: jmap (an IMAP upstream's counterpart is login_reuse)");
    }
  }
  const std::optional<Value> ca_file = m->get("ca_file");
  const bool ca_ok = read_string(ca_file, up.ca_file);
  const std::optional<Value> verify = m->get("verify_certificate");
  const bool verify_ok = read_bool(verify, up.verify_certificate);
  const std::optional<Value> server_name = m->get("server_name");
  if (read_string(server_name, up.server_name) && !server_name && address_ok) {
    up.server_name = up.address.host;
  }
  read_string(m->get("mailbox"), up.mailbox);
  for (const auto& [key, out] :
       {std::pair<std::string_view, Duration*>{"connect_timeout", &up.connect_timeout},
        std::pair<std::string_view, Duration*>{"command_timeout", &up.command_timeout}}) {
    const std::optional<Value> timeout = m->get(key);
    if (read_duration(timeout, *out) && timeout && out->count() == 0) {
      error(timeout->path, timeout->line, "must be greater than 0");
    }
  }
  read_bool(m->get("mark_seen"), up.mark_seen);
  read_uidl_format(m->get("uidl_format"), up.uidl_format);
  read_bool(m->get("reuse_xuidl"), up.reuse_xuidl);
  read_bool(m->get("expunge_without_uidplus"), up.expunge_without_uidplus);
  read_bool(m->get("send_id"), up.send_id);
  read_bool(m->get("pipelining"), up.pipelining);
  for (const auto& [key, out] :
       {std::pair<std::string_view, Duration*>{"keepalive_idle", &up.keepalive_idle},
        std::pair<std::string_view, Duration*>{"keepalive_interval", &up.keepalive_interval}}) {
    const std::optional<Value> value = m->get(key);
    if (read_duration(value, *out) && value && *out < std::chrono::seconds(1)) {
      error(value->path, value->line, "must be at least 1s (TCP counts keep-alive in seconds)");
    }
  }
  read_uint(m->get("keepalive_count"), 1, 100, up.keepalive_count);
  read_login(m->get("login"));
  read_on_delete(m->get("on_delete"));
  read_uidl_map(m->get("uidl_map"));
  read_login_reuse(m->get("login_reuse"));
  if (jmap) {
    refuse_imap_only_keys(*m, up);
    const std::optional<Value> remember = m->get("remember_session");
    if (read_duration(remember, up.remember_session) && remember &&
        up.remember_session > std::chrono::hours(24)) {
      error(remember->path, remember->line,
            "at most 24h: the session resource is where a server announces its changes");
    }
  }

  if (tls_ok && up.tls != TlsMode::kNone) {
    if (verify_ok && up.verify_certificate && ca_ok) {
      // The default path has no line of its own; the upstream key stands in for it.
      check_readable(ca_file ? ca_file->path : join(v->path, "ca_file"),
                     ca_file ? ca_file->line : m->line(), up.ca_file);
    }
    if (verify_ok && !up.verify_certificate) {
      warn(verify->path, verify->line,
           "the upstream's certificate is not verified; anyone on the path can read passwords");
    }
  }
  // tls: none is never the default, so `tls` is present here (for IMAP; a JMAP url was
  // checked by read_jmap_url).
  if (!jmap && tls_ok && address_ok && up.tls == TlsMode::kNone && !is_loopback(up.address.host)) {
    warn(tls->path, tls->line, "passwords are sent to the upstream unencrypted");
  }
}

void Loader::read_limits(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kLimitsKeys);
  if (!m) {
    return;
  }
  Limits& limits = config_.limits;
  const std::optional<Value> idle = m->get("idle_timeout");
  if (read_duration(idle, limits.idle_timeout) && idle) {
    if (limits.idle_timeout.count() == 0) {
      error(idle->path, idle->line, "must be greater than 0");
    } else if (limits.idle_timeout < kRfc1939MinIdle) {
      warn(idle->path, idle->line,
           "below the 10-minute minimum of RFC 1939's autologout timer; idle clients may be "
           "cut off");
    }
  }
  const std::optional<Value> drain = m->get("drain_timeout");
  if (read_duration(drain, limits.drain_timeout) && drain && limits.drain_timeout.count() == 0) {
    error(drain->path, drain->line, "must be greater than 0");
  }
  read_uint(m->get("max_connections"), 1, 1'000'000, limits.max_connections);
  const bool high_ok =
      read_size(m->get("client_write_high_watermark"), limits.client_write_high_watermark);
  const std::optional<Value> low = m->get("client_write_low_watermark");
  const bool low_ok = read_size(low, limits.client_write_low_watermark);
  if (high_ok && low_ok &&
      limits.client_write_low_watermark >= limits.client_write_high_watermark) {
    // Blame the key the user wrote; when both are defaults this cannot happen.
    const std::optional<Value> high = m->get("client_write_high_watermark");
    const Value& blamed = low ? *low : *high;
    error(blamed.path, blamed.line,
          "client_write_low_watermark (" + std::to_string(limits.client_write_low_watermark) +
              " bytes) must be less than client_write_high_watermark (" +
              std::to_string(limits.client_write_high_watermark) + " bytes)");
  }
  const std::optional<Value> ahead = m->get("read_ahead");
  if (read_size(ahead, limits.read_ahead) && ahead && limits.read_ahead > kMaxReadAhead) {
    error(ahead->path, ahead->line,
          "must be at most 16MiB (each session may hold this much in memory); 0 turns it off");
  }
}

void Loader::read_workers(const std::optional<Value>& v) {
  // "auto" (one event loop per core) or how many.
  if (!v) {
    return;
  }
  if (v->node.IsScalar() && v->node.Scalar() == "auto") {
    config_.workers = 0;
    return;
  }
  std::uint32_t count = 0;
  if (v->node.IsScalar() && !v->node.Scalar().empty() &&
      v->node.Scalar().find_first_not_of("0123456789") == std::string::npos) {
    if (read_uint(v, 1, 256, count)) {
      config_.workers = count;
    }
    return;
  }
  error(v->path, v->line, "expected auto or a number of worker loops from 1 to 256");
}

void Loader::read_logging(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kLoggingKeys);
  if (!m) {
    return;
  }
  std::string_view level = config_.logging.level;
  if (read_choice(m->get("level"), kLogLevels, level)) {
    config_.logging.level = std::string(level);
  }
  read_choice(m->get("format"), kLogFormats, config_.logging.format);
  const std::optional<Value> user = m->get("user");
  read_choice(user, kUserLogging, config_.logging.user);
  read_secret(*m, user ? *user : *v, "user_hash_key", config_.logging.user_hash_key,
              config_.logging.user == UserLogging::kHash);
}

void Loader::read_login_reuse(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kLoginReuseKeys);
  if (!m) {
    return;
  }
  Upstream::LoginReuse& reuse = config_.upstream.login_reuse;
  const std::optional<Value> idle = m->get("idle");
  // RFC 3501 §5.4: a server may log out a client idle for 30 minutes.
  if (read_duration(idle, reuse.idle) && idle && reuse.idle > std::chrono::minutes(25)) {
    error(idle->path, idle->line,
          "at most 25m: IMAP servers may log out a connection idle for 30 minutes");
  }
  const std::optional<Value> max_age = m->get("max_age");
  if (read_duration(max_age, reuse.max_age) && max_age && reuse.max_age.count() == 0) {
    error(max_age->path, max_age->line, "must be greater than 0");
  }
  read_uint(m->get("max"), 1, 1'000'000, reuse.max);
}

void Loader::read_uidl_map(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kUidlMapKeys);
  if (!m) {
    return;
  }
  if (const std::optional<Value> store = m->get("store")) {
    std::string name;
    if (read_string(store, name) && name == "metadata") {
      config_.upstream.uidl_map.metadata = true;
      if (const std::optional<Value> directory = m->get("directory")) {
        error(directory->path, directory->line,
              "only with store: directory (store: metadata keeps the map on the mailbox)");
      }
      return;
    }
    if (!name.empty() && name != "directory") {
      error(store->path, store->line, "expected directory or metadata, got " + quoted(name));
    }
  }
  const std::optional<Value> directory = m->required("directory");
  std::string& out = config_.upstream.uidl_map.directory;
  if (!read_string(directory, out) || !directory) {
    return;
  }
  struct stat st {};
  std::string why;
  if (out.empty()) {
    why = "empty";
  } else if (::stat(out.c_str(), &st) != 0) {
    why = std::generic_category().message(errno);
  } else if (!S_ISDIR(st.st_mode)) {
    why = std::generic_category().message(ENOTDIR);
  } else if (::access(out.c_str(), R_OK | X_OK) != 0) {
    why = std::generic_category().message(errno);
  }
  if (!why.empty()) {
    error(directory->path, directory->line,
          "must be a readable directory: " + quoted(out) + " (" + why + ")");
  }
}

void Loader::read_on_delete(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kOnDeleteKeys);
  if (!m) {
    return;
  }
  OnDelete& on_delete = config_.upstream.on_delete;
  read_choice(m->get("action"), kDeleteActions, on_delete.action);
  const std::optional<Value> folder = m->get("folder");
  if (read_string(folder, on_delete.folder) && folder) {
    const bool printable = std::all_of(on_delete.folder.begin(), on_delete.folder.end(),
                                       [](char c) { return c >= 0x20 && c < 0x7f; });
    if (on_delete.folder.empty() || !printable) {
      error(folder->path, folder->line,
            "must be a non-empty mailbox name of printable ASCII (IMAP's modified UTF-7 "
            "form for other characters, e.g. \"Gel&APY-scht\")");
    } else if (lower(on_delete.folder) == lower(config_.upstream.mailbox)) {
      error(folder->path, folder->line, "must differ from upstream.mailbox");
    }
  }
  const std::optional<Value> keyword = m->get("keyword");
  if (read_string(keyword, on_delete.keyword) && keyword) {
    // An IMAP flag-keyword is an atom: no space, control, or one of ( ) { % * " \ ].
    const bool atom = !on_delete.keyword.empty() && on_delete.keyword.size() <= 64 &&
                      std::all_of(on_delete.keyword.begin(), on_delete.keyword.end(), [](char c) {
                        return c > 0x20 && c < 0x7f &&
                               std::string_view("(){%*\"\\]").find(c) == std::string_view::npos;
                      });
    if (lower(on_delete.keyword) == "$popbridgepending") {
      error(keyword->path, keyword->line, "is popbridge's own mark for deletions in progress");
    } else if (!atom) {
      error(keyword->path, keyword->line,
            "must be an IMAP keyword: 1-64 printable characters without spaces or ( ) { % * "
            "\" \\ ] (system flags such as \\Deleted are not keywords)");
    }
  }
}

void Loader::read_pop3(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kPop3Keys);
  if (!m) {
    return;
  }
  const std::optional<Value> delay = m->get("login_delay");
  if (read_duration(delay, config_.pop3.login_delay) && delay &&
      config_.pop3.login_delay.count() % 1000 != 0) {
    error(delay->path, delay->line, "must be whole seconds (CAPA announces it in seconds)");
  }
  read_workarounds(m->get("workarounds"));
}

void Loader::read_workarounds(const std::optional<Value>& v) {
  if (!v || v->node.IsNull()) {
    return;
  }
  if (!v->node.IsSequence()) {
    error(v->path, v->line, "expected a sequence of workaround names, got " + describe(v->node));
    return;
  }
  std::size_t index = 0;
  for (const YAML::Node& node : v->node) {
    const Value item{node, v->path + "[" + std::to_string(index++) + "]",
                     node.IsNull() ? v->line : line_of(node),
                     node.IsNull() ? v->line : line_of(node)};
    std::string name;
    if (!read_string(item, name)) {
      continue;
    }
    if (name == "outlook-no-nuls") {
      config_.pop3.workarounds.outlook_no_nuls = true;
    } else if (name == "oe-ns-eoh") {
      config_.pop3.workarounds.oe_ns_eoh = true;
    } else {
      error(item.path, item.line,
            "unknown workaround \"" + name + "\"; known: outlook-no-nuls, oe-ns-eoh");
    }
  }
}

void Loader::read_metrics(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kMetricsKeys);
  if (!m) {
    return;
  }
  const std::optional<Value> address = m->required("address");
  Endpoint endpoint;
  if (address && read_endpoint(address, endpoint)) {
    const auto it = addresses_.find(lower(endpoint.to_string()));
    if (it != addresses_.end()) {
      error(address->path, address->line,
            "address " + quoted(endpoint.to_string()) + " is already used by " + it->second);
    }
    config_.metrics.address = std::move(endpoint);
  }
  const std::optional<Value> interval = m->get("probe_interval");
  if (read_duration(interval, config_.metrics.probe_interval) && interval &&
      config_.metrics.probe_interval < std::chrono::seconds(1)) {
    error(interval->path, interval->line, "must be at least 1s");
  }
  read_uint(m->get("probe_failures"), 1, 100, config_.metrics.probe_failures);
}

}  // namespace detail

std::vector<std::string> known_keys() {
  using namespace detail;
  // The maps the readers open, by where they sit; the same arrays the readers check
  // against, so a key added to a reader shows up here (and in the example test) at once.
  std::vector<std::string> keys;
  add_keys(keys, "", kTopKeys);
  add_keys(keys, "listeners[].", kListenerKeys);
  add_keys(keys, "tls.", kTlsKeys);
  add_keys(keys, "upstream.", kUpstreamKeys);
  add_keys(keys, "upstream.login.", kLoginKeys);
  add_keys(keys, "upstream.login.oauth2.", kOAuth2Keys);
  add_keys(keys, "upstream.on_delete.", kOnDeleteKeys);
  add_keys(keys, "upstream.uidl_map.", kUidlMapKeys);
  add_keys(keys, "upstream.login_reuse.", kLoginReuseKeys);
  add_keys(keys, "pop3.", kPop3Keys);
  add_keys(keys, "auth.", kAuthKeys);
  add_keys(keys, "auth.http.", kHttpAuthKeys);
  add_keys(keys, "limits.", kLimitsKeys);
  add_keys(keys, "logging.", kLoggingKeys);
  add_keys(keys, "metrics.", kMetricsKeys);
  return keys;
}

}  // namespace popbridge::config
