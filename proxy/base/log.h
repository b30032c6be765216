// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

#include "config/config.h"
#include "protocol/common/secret.h"

namespace popbridge::proxy::log {

enum class Level { kTrace, kDebug, kInfo, kWarn, kError };

// One field of a structured log line. Values are copied into the line at once, so views
// to temporaries are fine. Never pass a password or token here.
struct Field {
  std::string_view key;
  std::variant<std::string_view, std::int64_t, std::uint64_t, double, bool> value;
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, int v) : key(k), value(static_cast<std::int64_t>(v)) {}
  Field(std::string_view k, long v) : key(k), value(static_cast<std::int64_t>(v)) {}
  Field(std::string_view k, long long v) : key(k), value(static_cast<std::int64_t>(v)) {}
  Field(std::string_view k, unsigned v) : key(k), value(static_cast<std::uint64_t>(v)) {}
  Field(std::string_view k, unsigned long v) : key(k), value(static_cast<std::uint64_t>(v)) {}
  Field(std::string_view k, unsigned long long v) : key(k), value(static_cast<std::uint64_t>(v)) {}
  Field(std::string_view k, double v) : key(k), value(v) {}
  Field(std::string_view k, bool v) : key(k), value(v) {}
};

// How a user name is logged, per logging.user: as is, hashed, or "-".
std::string user(std::string_view name);

// Sets level and format (logfmt or JSON lines on stderr), and the key of logging.user:
// hash (read from logging.user_hash_key_* by the caller; until then hashed names are "-").
void configure(const config::Logging& settings,
               const protocol::Secret& user_hash_key = protocol::Secret());
bool enabled(Level level);
// Writes one line: "level=info event=<event> key=value ..." (or the JSON equivalent).
void write(Level level, std::string_view event, std::initializer_list<Field> fields);

inline void debug(std::string_view event, std::initializer_list<Field> fields = {}) {
  write(Level::kDebug, event, fields);
}
inline void info(std::string_view event, std::initializer_list<Field> fields = {}) {
  write(Level::kInfo, event, fields);
}
inline void warn(std::string_view event, std::initializer_list<Field> fields = {}) {
  write(Level::kWarn, event, fields);
}
inline void error(std::string_view event, std::initializer_list<Field> fields = {}) {
  write(Level::kError, event, fields);
}

}  // namespace popbridge::proxy::log
