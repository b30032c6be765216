// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the config loader must turn any bytes into a LoadResult, never a crash,
// an exception or a hang, and must keep its own contract about errors and config.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // An exception escaping here aborts the run, which libFuzzer reports as a crash.
  const popbridge::config::LoadResult result = popbridge::config::load_config_string(text);
  if (result.config.has_value() != result.errors.empty()) {
    std::abort();
  }
  for (const popbridge::config::Diagnostic& d : result.errors) {
    (void)d.to_string("fuzz.yaml");
  }
  // The value parsers see the same bytes, since they are public API in their own right.
  (void)popbridge::config::parse_duration(text);
  (void)popbridge::config::parse_size(text);
  (void)popbridge::config::parse_endpoint(text);
  return 0;
}
