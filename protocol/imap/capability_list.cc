// SPDX-License-Identifier: Apache-2.0
#include "protocol/imap/capability_list.h"

#include "protocol/common/ascii.h"

namespace popbridge::protocol {

void CapabilityList::assign(std::string_view space_separated) {
  text_.clear();
  while (!space_separated.empty()) {
    const std::size_t end = space_separated.find(' ');
    add(space_separated.substr(0, end));
    if (end == std::string_view::npos) {
      break;
    }
    space_separated.remove_prefix(end + 1);
  }
  text_.shrink_to_fit();
}

void CapabilityList::assign(const std::vector<std::string_view>& atoms) {
  text_.clear();
  for (std::string_view atom : atoms) {
    add(atom);
  }
  text_.shrink_to_fit();
}

void CapabilityList::clear() {
  text_.clear();
  text_.shrink_to_fit();
}

void CapabilityList::add(std::string_view atom) {
  if (!atom.empty()) {
    text_.append(atom);
    text_.push_back(' ');
  }
}

bool CapabilityList::has(std::string_view name) const {
  std::string_view rest = text_;
  while (!rest.empty()) {
    const std::size_t end = rest.find(' ');
    if (equals_ignoring_ascii_case(rest.substr(0, end), name)) {
      return true;
    }
    rest.remove_prefix(end + 1);
  }
  return false;
}

}  // namespace popbridge::protocol
