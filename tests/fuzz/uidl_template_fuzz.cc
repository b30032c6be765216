// SPDX-License-Identifier: Apache-2.0
// Parses arbitrary templates (upstream.uidl_format) and renders every accepted one with
// arbitrary fields: no crash, no unbounded output, and the UIDL a client finally sees is
// always valid by RFC 1939.

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "protocol/pop3/uidl_template.h"

namespace {

using namespace popbridge::protocol;

void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider provider(data, size);
  UidlFields fields;
  fields.uid = provider.ConsumeIntegral<std::uint32_t>();
  fields.uidvalidity = provider.ConsumeIntegral<std::uint32_t>();
  const std::string guid = provider.ConsumeRandomLengthString(128);
  fields.guid = guid;
  const std::string text = provider.ConsumeRemainingBytesAsString();
  std::string error;
  const std::optional<UidlTemplate> parsed = UidlTemplate::parse(text, &error);
  check(parsed.has_value() || !error.empty());
  if (!parsed) {
    return 0;
  }
  const std::string rendered = parsed->render(fields);
  // Each piece adds at most its literal, a value of a few dozen octets, or padding.
  check(rendered.size() <= text.size() * 1100 + guid.size() * text.size() + 64);
  check(valid_uidl(sanitize_uidl(rendered)));
  return 0;
}
