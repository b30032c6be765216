// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/line_reader.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace popbridge::protocol {
namespace {

using namespace std::string_literals;

// A too-long line shows up as this marker, which no test line contains.
const std::string kTooLong = "<too long>";

void drain(LineReader& reader, std::vector<std::string>& lines) {
  while (std::optional<LineReader::Line> line = reader.next()) {
    if (line->too_long) {
      EXPECT_TRUE(line->text.empty());
      lines.push_back(kTooLong);
    } else {
      lines.emplace_back(line->text);
    }
  }
}

// Feeds `input` cut at the given offsets, taking lines after every piece.
std::vector<std::string> read_split(std::size_t max_line, std::string_view input,
                                    const std::vector<std::size_t>& cuts) {
  LineReader reader(max_line);
  std::vector<std::string> lines;
  std::size_t from = 0;
  for (const std::size_t cut : cuts) {
    reader.append(input.substr(from, cut - from));
    drain(reader, lines);
    // Only the line still waiting for its LF is held, and at most max_line + 1 octets of
    // it (a CR may still turn out to be part of the CRLF).
    EXPECT_LE(reader.buffered(), max_line + 1);
    from = cut;
  }
  reader.append(input.substr(from));
  drain(reader, lines);
  EXPECT_LE(reader.buffered(), max_line + 1);
  return lines;
}

struct LineCase {
  const char* name;
  std::size_t max_line;
  std::string input;
  std::vector<std::string> lines;
  std::size_t left_over;  // buffered() at the end
};

class LineReaderTest : public testing::TestWithParam<LineCase> {};

TEST_P(LineReaderTest, WholeInput) {
  const LineCase& c = GetParam();
  LineReader reader(c.max_line);
  reader.append(c.input);
  std::vector<std::string> lines;
  drain(reader, lines);
  EXPECT_EQ(lines, c.lines);
  EXPECT_EQ(reader.buffered(), c.left_over);
}

TEST_P(LineReaderTest, EverySplitPoint) {
  const LineCase& c = GetParam();
  for (std::size_t i = 0; i <= c.input.size(); ++i) {
    EXPECT_EQ(read_split(c.max_line, c.input, {i}), c.lines) << "split at " << i;
  }
}

TEST_P(LineReaderTest, EveryPairOfSplitPoints) {
  const LineCase& c = GetParam();
  for (std::size_t i = 0; i <= c.input.size(); ++i) {
    for (std::size_t j = i; j <= c.input.size(); ++j) {
      EXPECT_EQ(read_split(c.max_line, c.input, {i, j}), c.lines) << "splits at " << i << ", " << j;
    }
  }
}

TEST_P(LineReaderTest, OneByteAtATime) {
  const LineCase& c = GetParam();
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < c.input.size(); ++i) {
    cuts.push_back(i);
  }
  EXPECT_EQ(read_split(c.max_line, c.input, cuts), c.lines);
}

TEST_P(LineReaderTest, LinesTakenOnlyAtTheEnd) {
  // A caller may stop taking lines (a command in flight) while input keeps coming.
  const LineCase& c = GetParam();
  LineReader reader(c.max_line);
  for (const char octet : c.input) {
    reader.append(std::string_view(&octet, 1));
  }
  std::vector<std::string> lines;
  drain(reader, lines);
  EXPECT_EQ(lines, c.lines);
  EXPECT_EQ(reader.buffered(), c.left_over);
}

TEST_P(LineReaderTest, OneLineAtATimeBetweenAppends) {
  // Takes at most one line per append, so unread lines pile up and compaction has to
  // move them.
  const LineCase& c = GetParam();
  LineReader reader(c.max_line);
  std::vector<std::string> lines;
  auto take_one = [&] {
    if (std::optional<LineReader::Line> line = reader.next()) {
      lines.push_back(line->too_long ? kTooLong : std::string(line->text));
    }
  };
  for (std::size_t i = 0; i < c.input.size(); i += 3) {
    reader.append(std::string_view(c.input).substr(i, 3));
    take_one();
  }
  drain(reader, lines);
  EXPECT_EQ(lines, c.lines);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, LineReaderTest,
    testing::Values(
        LineCase{"Crlf", 255, "USER alice\r\nPASS a b c\r\n", {"USER alice", "PASS a b c"}, 0},
        LineCase{"BareLf", 255, "STAT\nLIST 1\n", {"STAT", "LIST 1"}, 0},
        LineCase{"LoneCrStays", 255, "a\rb\r\n", {"a\rb"}, 0},
        LineCase{"OnlyTheLastCrIsStripped", 255, "x\r\r\n\r\n", {"x\r", ""}, 0},
        LineCase{"EmptyLines", 255, "\r\n\n\r\n", {"", "", ""}, 0},
        LineCase{"NulKept", 255, "a\0b\r\n"s, {"a\0b"s}, 0},
        LineCase{"IncompleteTail", 255, "NOOP\r\nQU", {"NOOP"}, 2},
        LineCase{"TailEndingInCr", 255, "NOOP\r\nQUIT\r", {"NOOP"}, 5},
        LineCase{"Nothing", 255, "", {}, 0},
        LineCase{"ExactlyMaxCrlf", 5, "12345\r\n", {"12345"}, 0},
        LineCase{"ExactlyMaxLf", 5, "12345\n", {"12345"}, 0},
        LineCase{"OneOverCrlf", 5, "123456\r\n", {kTooLong}, 0},
        LineCase{"OneOverLf", 5, "123456\n", {kTooLong}, 0},
        LineCase{"CrIsContentUnlessBeforeLf", 5, "1234\r\r\n", {"1234\r"}, 0},
        LineCase{"CrContentMakesItTooLong", 5, "12345\r\r\n", {kTooLong}, 0},
        LineCase{"LoneCrAtTheLimit", 5, "12345\rx\n", {kTooLong}, 0},
        LineCase{"TooLongThenGood", 5, "abcdefghij\r\nok\r\n", {kTooLong, "ok"}, 0},
        LineCase{"GoodTooLongGood", 4, "a\r\nbbbbbbbbbbbbbbbbbbbb\nc\r\n", {"a", kTooLong, "c"}, 0},
        LineCase{"TwoTooLongInARow", 3, "xxxxxx\r\nyyyyyyy\r\n", {kTooLong, kTooLong}, 0},
        LineCase{"TooLongNotYetEnded", 3, "ok\r\nxxxxxxxxxxxxxx", {"ok"}, 4},
        LineCase{"MaxZero", 0, "\r\na\r\n\n", {"", kTooLong, ""}, 0},
        LineCase{"Pipelined",
                 255,
                 "STAT\r\nLIST\r\nUIDL 1\r\nRETR 1\r\nQUIT\r\n",
                 {"STAT", "LIST", "UIDL 1", "RETR 1", "QUIT"},
                 0}),
    [](const testing::TestParamInfo<LineCase>& info) { return std::string(info.param.name); });

TEST(LineReaderLimitTest, MemoryStaysBoundedWithoutLf) {
  LineReader reader(100);
  const std::string chunk(4096, 'a');
  for (int i = 0; i < 4096; ++i) {  // 16 MiB without a line end
    reader.append(chunk);
    ASSERT_LE(reader.buffered(), 101u);
    ASSERT_FALSE(reader.next().has_value());
  }
  reader.append("\r\nNOOP\r\n");
  std::optional<LineReader::Line> line = reader.next();
  ASSERT_TRUE(line.has_value());
  EXPECT_TRUE(line->too_long);
  line = reader.next();
  ASSERT_TRUE(line.has_value());
  EXPECT_FALSE(line->too_long);
  EXPECT_EQ(line->text, "NOOP");
  EXPECT_FALSE(reader.next().has_value());
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(LineReaderLimitTest, OverLongLineInOneAppendIsNotCopied) {
  LineReader reader(10);
  reader.append(std::string(1 << 20, 'z') + "\n");
  EXPECT_LE(reader.buffered(), 12u);
  std::optional<LineReader::Line> line = reader.next();
  ASSERT_TRUE(line.has_value());
  EXPECT_TRUE(line->too_long);
}

TEST(LineReaderLimitTest, LongLinesUpToTheLimitPass) {
  const std::string text(16384, 'Q');
  for (const char* end : {"\r\n", "\n"}) {
    LineReader reader(16384);
    for (const char octet : text + end) {
      reader.append(std::string_view(&octet, 1));
    }
    std::optional<LineReader::Line> line = reader.next();
    ASSERT_TRUE(line.has_value());
    EXPECT_FALSE(line->too_long);
    EXPECT_EQ(line->text, text);
  }
}

TEST(LineReaderDiscardTest, DropsUnreadInput) {
  // STLS: whatever the client sent after the command must never be parsed (RFC 2595
  // command injection).
  LineReader reader(255);
  reader.append("STLS\r\nUSER injected\r\nPASS x");
  std::optional<LineReader::Line> line = reader.next();
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->text, "STLS");
  reader.discard();
  EXPECT_EQ(reader.buffered(), 0u);
  EXPECT_FALSE(reader.next().has_value());
  reader.append("CAPA\r\n");
  line = reader.next();
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->text, "CAPA");
}

TEST(LineReaderDiscardTest, EndsAnOverLongLine) {
  LineReader reader(4);
  reader.append("xxxxxxxxxx");
  reader.discard();
  reader.append("ok\r\n");
  std::optional<LineReader::Line> line = reader.next();
  ASSERT_TRUE(line.has_value());
  EXPECT_FALSE(line->too_long);
  EXPECT_EQ(line->text, "ok");
}

bool contains(const char* data, std::size_t size, std::string_view needle) {
  return std::string_view(data, size).find(needle) != std::string_view::npos;
}

TEST(LineReaderWipeTest, TakenLinesAreWiped) {
  LineReader reader(255);
  const std::string input = "PASS correct horse battery\r\nNOOP\r\n";
  reader.append(input);
  std::optional<LineReader::Line> line = reader.next();
  ASSERT_TRUE(line.has_value());
  ASSERT_EQ(line->text, "PASS correct horse battery");
  // The reader's buffer; no append follows, so it is not reallocated.
  const char* buffer = line->text.data();
  line = reader.next();
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->text, "NOOP");
  EXPECT_FALSE(reader.next().has_value());
  EXPECT_FALSE(contains(buffer, input.size(), "horse"));
}

TEST(LineReaderWipeTest, DiscardWipes) {
  LineReader reader(255);
  const std::string input = "STLS\r\nPASS secret-octets";
  reader.append(input);
  std::optional<LineReader::Line> line = reader.next();
  ASSERT_TRUE(line.has_value());
  const char* buffer = line->text.data();
  reader.discard();
  EXPECT_FALSE(contains(buffer, input.size(), "secret"));
}

TEST(LineReaderHasLine, TellsWhetherAWholeLineIsWaiting) {
  LineReader reader(64);
  EXPECT_FALSE(reader.has_line());
  reader.append("RETR 1\r\nRETR");
  EXPECT_TRUE(reader.has_line());
  ASSERT_TRUE(reader.next().has_value());
  EXPECT_FALSE(reader.has_line()) << "only the start of the next line is here";
  reader.append(" 2\r\n");
  EXPECT_TRUE(reader.has_line());
  ASSERT_EQ(reader.next()->text, "RETR 2");
  EXPECT_FALSE(reader.has_line());
}

}  // namespace
}  // namespace popbridge::protocol
