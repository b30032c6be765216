// SPDX-License-Identifier: Apache-2.0
// Fuzzes the PROXY protocol decoder: any bytes, split anywhere, must give the same result
// as one piece, never take bytes past the header, and never hold more than a header.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/common/proxy_protocol.h"

using popbridge::protocol::ProxyProtocolDecoder;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::size_t step = 1 + data[0] % 16;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  ProxyProtocolDecoder whole;
  std::size_t whole_used = 0;
  const auto whole_status = whole.feed(input, whole_used);

  ProxyProtocolDecoder pieces;
  std::size_t total = 0;
  auto status = ProxyProtocolDecoder::Status::kNeedMore;
  while (status == ProxyProtocolDecoder::Status::kNeedMore && total < input.size()) {
    std::size_t used = 0;
    const std::string_view piece = input.substr(total, step);
    status = pieces.feed(piece, used);
    if (used > piece.size()) {
      std::abort();
    }
    total += used;
  }
  if (status != whole_status || total != whole_used) {
    std::abort();
  }
  if (status == ProxyProtocolDecoder::Status::kDone &&
      whole.header().source_address != pieces.header().source_address) {
    std::abort();
  }
  return 0;
}
