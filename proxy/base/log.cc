// SPDX-License-Identifier: Apache-2.0
#include "proxy/base/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>
#include <string>

#include "protocol/common/digest.h"
#include "protocol/common/secret.h"

namespace popbridge::proxy::log {
namespace {

// Read by every worker thread, changed by a reload on the main thread.
std::atomic<config::LogFormat> g_format{config::LogFormat::kLogfmt};
std::atomic<Level> g_level{Level::kInfo};
std::atomic<bool> g_off{false};
std::atomic<config::UserLogging> g_user{config::UserLogging::kPlain};
std::mutex g_user_hash_key_mutex;
protocol::Secret g_user_hash_key;  // guarded by g_user_hash_key_mutex

std::shared_ptr<spdlog::logger>& logger() {
  // stderr, unbuffered per line, no colour: lines go to journald or a container log.
  static std::shared_ptr<spdlog::logger> instance = [] {
    // _mt: worker threads share the sink; each line is written whole.
    auto created = spdlog::stderr_logger_mt("popbridge");
    created->set_pattern("time=%Y-%m-%dT%H:%M:%S.%eZ %v", spdlog::pattern_time_type::utc);
    created->set_level(spdlog::level::trace);
    created->flush_on(spdlog::level::trace);
    return created;
  }();
  return instance;
}

std::string_view level_name(Level level) {
  switch (level) {
    case Level::kTrace:
      return "trace";
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

bool needs_quotes(std::string_view text) {
  if (text.empty()) {
    return true;
  }
  for (char c : text) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) >= 0x7f) {
      return true;
    }
  }
  return false;
}

// Escapes for both logfmt and JSON: control bytes never reach the terminal raw, so a
// client cannot forge log lines with CR/LF in a user name.
// Octets in a valid UTF-8 sequence starting at text[i], or 0 (RFC 3629: no overlongs,
// no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t at) { return static_cast<unsigned char>(text[at]); };
  const unsigned char lead = byte(i);
  std::size_t length = 0;
  unsigned char low = 0x80;
  unsigned char high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    low = lead == 0xe0 ? 0xa0 : 0x80;
    high = lead == 0xed ? 0x9f : 0xbf;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    low = lead == 0xf0 ? 0x90 : 0x80;
    high = lead == 0xf4 ? 0x8f : 0xbf;
  } else {
    return 0;
  }
  if (i + length > text.size() || byte(i + 1) < low || byte(i + 1) > high) {
    return 0;
  }
  for (std::size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) {
      return 0;
    }
  }
  return length;
}

void append_escaped(std::string& out, std::string_view text, bool json = false) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    auto byte = static_cast<unsigned char>(c);
    if (json && byte >= 0x80) {
      // A JSON line must be valid UTF-8: valid sequences pass, any other octet (a client's
      // Latin-1 user name) becomes U+FFFD.
      const std::size_t length = utf8_sequence(text, i);
      if (length == 0) {
        out += "\\ufffd";
      } else {
        out.append(text.substr(i, length));
        i += length - 1;
      }
      continue;
    }
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (byte < 0x20 || byte == 0x7f) {
      out += "\\u00";
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xf]);
    } else {
      out.push_back(c);
    }
  }
}

void append_value(std::string& out, const Field& field, bool json) {
  std::visit(
      [&](const auto& value) {
        using T = std::decay_t<decltype(value)>;
        if constexpr (std::is_same_v<T, std::string_view>) {
          if (json || needs_quotes(value)) {
            out.push_back('"');
            append_escaped(out, value, json);
            out.push_back('"');
          } else {
            out += value;
          }
        } else if constexpr (std::is_same_v<T, bool>) {
          out += value ? "true" : "false";
        } else {
          out += std::to_string(value);
        }
      },
      field.value);
}

}  // namespace

std::string user(std::string_view name) {
  switch (g_user.load()) {
    case config::UserLogging::kPlain:
      return std::string(name);
    case config::UserLogging::kOmit:
      return "-";
    case config::UserLogging::kHash:
      break;
  }
  // 64 bits of HMAC-SHA-256: enough to tell users apart in a log; without the key, a list
  // of addresses does not reveal whose lines they are.
  const std::lock_guard<std::mutex> lock(g_user_hash_key_mutex);
  if (g_user_hash_key.empty()) {
    return "-";  // the key is not loaded yet: an unkeyed hash would be reversible
  }
  return protocol::hmac_sha256_hex(g_user_hash_key.view(), name).substr(0, 16);
}

void configure(const config::Logging& settings, const protocol::Secret& user_hash_key) {
  {
    const std::lock_guard<std::mutex> lock(g_user_hash_key_mutex);
    g_user_hash_key = user_hash_key;
  }
  g_format = settings.format;
  g_user = settings.user;
  g_off = settings.level == "off";
  if (settings.level == "trace") {
    g_level = Level::kTrace;
  } else if (settings.level == "debug") {
    g_level = Level::kDebug;
  } else if (settings.level == "warn") {
    g_level = Level::kWarn;
  } else if (settings.level == "error") {
    g_level = Level::kError;
  } else {
    g_level = Level::kInfo;
  }
  // Both formats carry the UTC time of the event, to the millisecond.
  logger()->set_pattern(g_format == config::LogFormat::kJson
                            ? "{\"time\":\"%Y-%m-%dT%H:%M:%S.%eZ\",%v}"
                            : "time=%Y-%m-%dT%H:%M:%S.%eZ %v",
                        spdlog::pattern_time_type::utc);
}

bool enabled(Level level) { return !g_off && level >= g_level; }

void write(Level level, std::string_view event, std::initializer_list<Field> fields) {
  if (!enabled(level)) {
    return;
  }
  std::string line;
  line.reserve(128);
  const bool json = g_format == config::LogFormat::kJson;
  if (json) {
    line += "\"level\":\"";
    line += level_name(level);
    line += "\",\"event\":\"";
    append_escaped(line, event);
    line += '"';
    for (const Field& field : fields) {
      line += ",\"";
      append_escaped(line, field.key);
      line += "\":";
      append_value(line, field, true);
    }
  } else {
    line += "level=";
    line += level_name(level);
    line += " event=";
    line += event;
    for (const Field& field : fields) {
      line += ' ';
      line += field.key;
      line += '=';
      append_value(line, field, false);
    }
  }
  logger()->info(line);
}

}  // namespace popbridge::proxy::log
