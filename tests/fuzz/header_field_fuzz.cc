// SPDX-License-Identifier: Apache-2.0
// Looks up a field in arbitrary header text (the X-UIDL of upstream.reuse_xuidl comes
// from any message anyone sent): no crash, and the value is never longer than the input,
// has no line feed and no blank at either end.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/common/header_field.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view header(reinterpret_cast<const char*>(data), size);
  const auto value = popbridge::protocol::first_header_field(header, "X-UIDL");
  if (value) {
    const bool bounded = value->size() <= size;
    const bool one_line = value->find('\n') == std::string_view::npos;
    const bool trimmed = value->empty() || (value->front() != ' ' && value->front() != '\t' &&
                                            value->back() != ' ' && value->back() != '\t');
    if (!bounded || !one_line || !trimmed) {
      std::abort();
    }
  }
  return 0;
}
