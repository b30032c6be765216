// SPDX-License-Identifier: Apache-2.0
#include "protocol/common/secret.h"

#include <string.h>

namespace popbridge::protocol {

void wipe(void* data, std::size_t size) noexcept {
  if (data != nullptr && size > 0) {
    explicit_bzero(data, size);
  }
}

Secret& Secret::operator=(const Secret& other) {
  if (this != &other) {
    // Wiped first: if the copy needs a larger buffer, the old one is freed already clean.
    clear();
    value_ = other.value_;
  }
  return *this;
}

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    // libstdc++ may hand our old heap buffer to `other`; it must be clean by then.
    clear();
    value_ = std::move(other.value_);
    other.clear();
  }
  return *this;
}

void Secret::clear() noexcept {
  // Growing within the capacity never reallocates, and makes every octet of the buffer
  // (including bytes left by an earlier, longer value) part of the string, so wiping it
  // needs no writes past size().
  value_.resize(value_.capacity());
  wipe(value_.data(), value_.size());
  value_.clear();
}

}  // namespace popbridge::protocol
