// SPDX-License-Identifier: Apache-2.0
// Feeds arbitrary bytes, cut into arbitrary chunks, through the POP3-side codecs and
// checks each streaming codec against a simple whole-input model of the same rule.

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/common/base64.h"
#include "protocol/pop3/line_reader.h"
#include "protocol/pop3/pop3_command.h"
#include "protocol/pop3/pop3_reply.h"
#include "protocol/sasl/sasl.h"

namespace {

using namespace popbridge::protocol;

void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}

// Chunk boundaries, all in [0, size], ascending.
std::vector<std::size_t> make_cuts(FuzzedDataProvider& provider, std::size_t size) {
  std::vector<std::size_t> cuts;
  const auto count = provider.ConsumeIntegralInRange<std::size_t>(0, 16);
  std::size_t at = 0;
  for (std::size_t i = 0; i < count && at < size; ++i) {
    at += provider.ConsumeIntegralInRange<std::size_t>(0, size - at);
    cuts.push_back(at);
  }
  return cuts;
}

std::vector<std::string_view> split(std::string_view input, const std::vector<std::size_t>& cuts) {
  std::vector<std::string_view> chunks;
  std::size_t from = 0;
  for (const std::size_t cut : cuts) {
    chunks.push_back(input.substr(from, cut - from));
    from = cut;
  }
  chunks.push_back(input.substr(from));
  return chunks;
}

void check_command(std::string_view line) {
  const Pop3ParseResult result = parse_pop3_command(line);
  if (const auto* error = std::get_if<Pop3ParseError>(&result)) {
    check(!error->message.empty());
    check(error->message.find_first_of("\r\n") == std::string::npos);
    return;
  }
  const auto& command = std::get<Pop3Command>(result);
  check(!verb_name(command.verb).empty());
  check(line.size() <= (command.verb == Pop3Verb::kAuth ? kMaxAuthLine : kMaxCommandLine));
  check(!command.message || *command.message >= 1);
  switch (command.verb) {
    case Pop3Verb::kRetr:
    case Pop3Verb::kDele:
    case Pop3Verb::kTop:
      check(command.message.has_value());
      break;
    case Pop3Verb::kPass:
      check(!command.secret.empty());
      check(line.substr(5) == command.secret.view());
      break;
    case Pop3Verb::kUser:
      check(!command.argument.empty() && command.argument.find(' ') == std::string::npos);
      break;
    default:
      break;
  }
}

void fuzz_lines(std::string_view input, std::size_t max_line,
                const std::vector<std::string_view>& chunks) {
  // The model: split at LF, drop one CR before it, measure.
  std::vector<std::string> expected;
  std::size_t from = 0;
  for (std::size_t lf = input.find('\n'); lf != std::string_view::npos;
       from = lf + 1, lf = input.find('\n', from)) {
    std::string_view text = input.substr(from, lf - from);
    if (!text.empty() && text.back() == '\r') {
      text.remove_suffix(1);
    }
    expected.push_back(text.size() > max_line ? std::string("\n too long") : std::string(text));
  }

  LineReader reader(max_line);
  std::vector<std::string> lines;
  for (const std::string_view chunk : chunks) {
    reader.append(chunk);
    while (std::optional<LineReader::Line> line = reader.next()) {
      check(!line->too_long || line->text.empty());
      lines.push_back(line->too_long ? std::string("\n too long") : std::string(line->text));
      if (!line->too_long) {
        check_command(line->text);
      }
    }
    check(reader.buffered() <= max_line + 1);
  }
  check(lines == expected);
  reader.discard();
  check(reader.buffered() == 0 && !reader.next());
}

void fuzz_stuffer(std::string_view input, const std::vector<std::string_view>& chunks) {
  std::string expected;
  bool line_start = true;
  for (const char c : input) {
    if (line_start && c == '.') {
      expected.push_back('.');
    }
    expected.push_back(c);
    line_start = c == '\n';
  }
  if (!line_start) {
    expected += "\r\n";
  }
  expected += ".\r\n";

  DotStuffer stuffer;
  std::string out;
  for (const std::string_view chunk : chunks) {
    stuffer.feed(chunk, out);
  }
  stuffer.finish(out);
  check(out == expected);
  check(stuffer.octets() == input.size());
  // Before the terminator, every line that starts with '.' starts with "..", so no client
  // can see the end of the reply early.
  const std::string_view body = std::string_view(out).substr(0, out.size() - 3);
  std::size_t i = 0;
  while (i < body.size()) {
    check(body[i] != '.' || (i + 1 < body.size() && body[i + 1] == '.'));
    const std::size_t lf = body.find('\n', i);
    if (lf == std::string_view::npos) {
      break;
    }
    i = lf + 1;
  }
}

void fuzz_top(std::string_view input, std::uint64_t body_lines,
              const std::vector<std::string_view>& chunks) {
  // The model: the header ends after the first line that is empty or just CR; then
  // count LFs.
  std::size_t end = input.size();
  bool done = false;
  std::size_t from = 0;
  for (std::size_t lf = input.find('\n'); lf != std::string_view::npos;
       from = lf + 1, lf = input.find('\n', from)) {
    const std::string_view line = input.substr(from, lf - from);
    if (line.empty() || line == "\r") {
      std::size_t at = lf + 1;
      std::uint64_t left = body_lines;
      while (left > 0) {
        const std::size_t next = input.find('\n', at);
        if (next == std::string_view::npos) {
          break;
        }
        at = next + 1;
        --left;
      }
      done = left == 0;
      end = done ? at : input.size();
      break;
    }
  }

  TopFilter filter(body_lines);
  std::string out;
  for (const std::string_view chunk : chunks) {
    const std::string_view taken = filter.take(chunk);
    check(taken.data() == chunk.data() && taken.size() <= chunk.size());
    out.append(taken);
  }
  check(out == input.substr(0, end));
  check(filter.done() == done);
}

void fuzz_replies(std::string_view input) {
  for (const std::string& reply : {ok_reply(input), err_reply(RespCode::kSysTemp, input)}) {
    check(reply.size() <= 512);
    check(reply.find_first_of("\r\n") == reply.size() - 2);
  }
}

void fuzz_sasl(std::string_view input) {
  check(base64_decode(base64_encode(input)) == std::string(input));
  if (const std::optional<std::string> decoded = base64_decode(input)) {
    check(input.size() % 4 == 0 && decoded->size() <= input.size() / 4 * 3);
  }
  const SaslResponse response = decode_sasl_response(input);
  check(response.kind == SaslResponse::Kind::kData || response.data.empty());
  if (const std::optional<PlainCredentials> plain = parse_sasl_plain(input)) {
    check(build_sasl_plain(plain->authzid, plain->authcid, plain->password.view()).view() == input);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider provider(data, size);
  const std::size_t max_line =
      provider.ConsumeBool() ? kMaxAuthLine : provider.ConsumeIntegralInRange<std::size_t>(0, 300);
  const auto body_lines = provider.ConsumeIntegralInRange<std::uint64_t>(0, 8);
  const std::string cut_bytes = provider.ConsumeBytesAsString(64);
  const std::string input = provider.ConsumeRemainingBytesAsString();

  FuzzedDataProvider cut_provider(reinterpret_cast<const std::uint8_t*>(cut_bytes.data()),
                                  cut_bytes.size());
  const std::vector<std::string_view> chunks = split(input, make_cuts(cut_provider, input.size()));

  fuzz_lines(input, max_line, chunks);
  fuzz_stuffer(input, chunks);
  fuzz_top(input, body_lines, chunks);
  fuzz_replies(input);
  fuzz_sasl(input);
  return 0;
}
