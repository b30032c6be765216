// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>
#include <string_view>

namespace popbridge::protocol {

// Overwrites memory in a way the optimiser may not elide.
void wipe(void* data, std::size_t size) noexcept;

// A credential (password, token, SASL response). Its bytes are wiped when it is
// destroyed or reassigned, including the small-string buffer, so a password does not
// linger in freed heap or stack memory. It is never printed.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string_view value) : value_(value) {}
  Secret(const Secret& other) : value_(other.value_) {}
  Secret(Secret&& other) noexcept : value_(std::move(other.value_)) { other.clear(); }
  Secret& operator=(const Secret& other);
  Secret& operator=(Secret&& other) noexcept;
  ~Secret() { clear(); }

  std::string_view view() const { return value_; }
  bool empty() const { return value_.empty(); }
  std::size_t size() const { return value_.size(); }
  void clear() noexcept;

 private:
  std::string value_;
};

}  // namespace popbridge::protocol
