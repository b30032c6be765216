// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/migration_match.h"

#include <algorithm>
#include <array>
#include <map>
#include <unordered_map>

#include "protocol/common/ascii.h"
#include "protocol/common/digest.h"

namespace popbridge::protocol {
namespace {

// Fields that migration tools, delivery agents and mbox-era servers add or rewrite, so
// they differ between the old copy and the new one (Dovecot's pop3-migration list, plus
// Lines).
constexpr std::array<std::string_view, 12> kVolatileFields = {
    "content-length", "lines",      "return-path", "status",
    "x-imap",         "x-imapbase", "x-keywords",  "x-message-flag",
    "x-status",       "x-uid",      "x-uidl",      "x-yahoo-newman-property"};

bool is_volatile(std::string_view name) {
  const std::string lowered = ascii_lowercase(name);
  return std::find(kVolatileFields.begin(), kVolatileFields.end(), lowered) !=
         kVolatileFields.end();
}

// Appends the octets of a field's text that survive re-folding and re-encoding: a run
// of 8-bit octets becomes one '?' (UTF-8 and Latin-1 spell "é" in two octets and one).
void append_stable(std::string_view text, std::string& out) {
  bool in_eight_bit = false;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      in_eight_bit = false;
      continue;
    }
    if (static_cast<unsigned char>(c) >= 0x80) {
      if (!in_eight_bit) {
        out.push_back('?');
      }
      in_eight_bit = true;
      continue;
    }
    in_eight_bit = false;
    out.push_back(ascii_lower(c));
  }
}

}  // namespace

std::string migration_header_hash(std::string_view header) {
  std::string normalized;
  normalized.reserve(header.size());
  bool skipping = false;  // the current field is volatile, continuation lines included
  std::size_t at = 0;
  while (at < header.size()) {
    std::size_t end = header.find('\n', at);
    std::string_view line = header.substr(at, end == std::string_view::npos ? end : end - at);
    at = end == std::string_view::npos ? header.size() : end + 1;
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.empty()) {
      break;  // the end of the header section
    }
    if (line.front() == ' ' || line.front() == '\t') {
      if (!skipping) {
        append_stable(line, normalized);
      }
      continue;
    }
    const std::size_t colon = line.find(':');
    skipping = colon != std::string_view::npos && is_volatile(line.substr(0, colon));
    if (skipping) {
      continue;
    }
    if (!normalized.empty()) {
      normalized.push_back('\n');
    }
    append_stable(line, normalized);
  }
  return sha256_hex(normalized);
}

MigrationMatch match_migrated_messages(const std::vector<MigrationMessage>& old_messages,
                                       const std::vector<MigrationMessage>& new_messages) {
  MigrationMatch result;
  std::vector<bool> old_taken(old_messages.size());
  std::vector<bool> new_taken(new_messages.size());
  auto pair = [&](std::size_t old_index, std::size_t new_index) {
    old_taken[old_index] = true;
    new_taken[new_index] = true;
    result.pairs.emplace_back(old_index, new_index);
  };
  using Groups = std::unordered_map<std::string, std::vector<std::size_t>>;
  auto group = [](const std::vector<MigrationMessage>& messages, auto key_of) {
    Groups groups;
    for (std::size_t i = 0; i < messages.size(); ++i) {
      std::string key = key_of(messages[i]);
      if (!key.empty()) {
        groups[std::move(key)].push_back(i);
      }
    }
    return groups;
  };
  const auto by_hash = [](const MigrationMessage& m) { return m.header_hash; };
  const Groups old_hashes = group(old_messages, by_hash);
  const Groups new_hashes = group(new_messages, by_hash);

  // 1 and 2: the header hash, then the size among identical headers.
  for (const auto& [hash, olds] : old_hashes) {
    auto found = new_hashes.find(hash);
    if (found == new_hashes.end()) {
      continue;
    }
    const std::vector<std::size_t>& news = found->second;
    if (olds.size() == 1 && news.size() == 1) {
      pair(olds[0], news[0]);
      continue;
    }
    std::map<std::uint64_t, std::pair<std::vector<std::size_t>, std::vector<std::size_t>>> sizes;
    for (std::size_t i : olds) {
      sizes[old_messages[i].size].first.push_back(i);
    }
    for (std::size_t i : news) {
      sizes[new_messages[i].size].second.push_back(i);
    }
    for (const auto& [size, sides] : sizes) {
      if (sides.first.size() == 1 && sides.second.size() == 1) {
        pair(sides.first[0], sides.second[0]);
      }
    }
  }

  // 3: Message-ID and size, for headers a server rewrote beyond the hash's tolerance.
  const auto by_id_and_size = [](const MigrationMessage& m) {
    return m.message_id.empty() ? std::string() : m.message_id + '\0' + std::to_string(m.size);
  };
  Groups old_ids;
  Groups new_ids;
  for (std::size_t i = 0; i < old_messages.size(); ++i) {
    if (!old_taken[i]) {
      if (std::string key = by_id_and_size(old_messages[i]); !key.empty()) {
        old_ids[std::move(key)].push_back(i);
      }
    }
  }
  for (std::size_t i = 0; i < new_messages.size(); ++i) {
    if (!new_taken[i]) {
      if (std::string key = by_id_and_size(new_messages[i]); !key.empty()) {
        new_ids[std::move(key)].push_back(i);
      }
    }
  }
  for (const auto& [key, olds] : old_ids) {
    auto found = new_ids.find(key);
    if (found != new_ids.end() && olds.size() == 1 && found->second.size() == 1) {
      pair(olds[0], found->second[0]);
    }
  }

  std::sort(result.pairs.begin(), result.pairs.end());
  for (std::size_t i = 0; i < old_messages.size(); ++i) {
    if (old_taken[i]) {
      continue;
    }
    result.unmatched_old.push_back(i);
    // A candidate existed on the new side, but not a single one.
    const bool had_candidates = new_hashes.count(old_messages[i].header_hash) != 0 ||
                                (!old_messages[i].message_id.empty() &&
                                 new_ids.count(by_id_and_size(old_messages[i])) != 0);
    if (had_candidates) {
      ++result.ambiguous;
    }
  }
  for (std::size_t i = 0; i < new_messages.size(); ++i) {
    if (!new_taken[i]) {
      result.unmatched_new.push_back(i);
    }
  }
  return result;
}

}  // namespace popbridge::protocol
