// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace popbridge::protocol {

// The capabilities an IMAP server announced (RFC 3501 §7.2.1), compared without regard to
// case. An upstream connection keeps them for its whole life, idle or not: kept as one
// string they cost their text (a few hundred octets), where a set of strings cost about
// 2 KiB per connection.
class CapabilityList {
 public:
  // Replaces the list: atoms separated by spaces (a response code's text).
  void assign(std::string_view space_separated);
  // Replaces the list: one atom each (a CAPABILITY response).
  void assign(const std::vector<std::string_view>& atoms);
  void clear();
  bool empty() const { return text_.empty(); }
  bool has(std::string_view name) const;

 private:
  void add(std::string_view atom);

  std::string text_;  // the atoms, each followed by one space
};

}  // namespace popbridge::protocol
