// SPDX-License-Identifier: Apache-2.0
// Fuzzes the HTTP client's response parser: any bytes, any split, optionally an EOF at
// the end. The limits must hold whatever arrives, a finished parse must be consistent,
// and the same bytes split differently must give the same answer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/http/http_response.h"

namespace {

using popbridge::protocol::HttpResponseLimits;
using popbridge::protocol::HttpResponseParser;
using Status = HttpResponseParser::Status;

constexpr HttpResponseLimits kLimits{512, 1024};

Status run(HttpResponseParser& parser, std::string_view input, std::size_t step, bool eof) {
  Status status = Status::kIncomplete;
  while (!input.empty() && status == Status::kIncomplete) {
    const std::size_t take = input.size() < step ? input.size() : step;
    status = parser.feed(input.substr(0, take));
    input.remove_prefix(take);
  }
  if (eof && status == Status::kIncomplete) {
    status = parser.finish_eof();
  }
  return status;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  // The first byte chooses the split size, whether the connection ends after the input,
  // and whether the response answers a HEAD request.
  const std::size_t step = 1 + data[0] % 32;
  const bool eof = (data[0] & 0x40) != 0;
  const bool head = (data[0] & 0x80) != 0;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  HttpResponseParser split(kLimits);
  HttpResponseParser whole(kLimits);
  if (head) {
    split.expect_no_body();
    whole.expect_no_body();
  }
  const Status status = run(split, input, step, eof);
  const Status reference = run(whole, input, input.size() + 1, eof);

  if (split.body().size() > kLimits.max_body_bytes) {
    std::abort();
  }
  std::size_t header_bytes = 0;
  for (const auto& header : split.headers()) {
    header_bytes += header.name.size() + header.value.size();
  }
  if (header_bytes > kLimits.max_header_bytes) {
    std::abort();
  }
  if (status == Status::kComplete &&
      (split.status_code() < 100 || split.status_code() > 599 || (head && !split.body().empty()))) {
    std::abort();
  }
  if (status == Status::kError && split.error_text().empty()) {
    std::abort();
  }
  // A split never changes the outcome (the header cap is exact, not per chunk).
  if (status != reference) {
    std::abort();
  }
  if (status == Status::kComplete &&
      (split.body() != whole.body() || split.status_code() != whole.status_code() ||
       split.headers().size() != whole.headers().size() ||
       split.keep_alive() != whole.keep_alive())) {
    std::abort();
  }
  return 0;
}
