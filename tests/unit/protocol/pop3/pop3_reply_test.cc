// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/pop3_reply.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace popbridge::protocol {
namespace {

using namespace std::string_literals;

TEST(Pop3ReplyTest, Ok) {
  EXPECT_EQ(ok_reply(""), "+OK\r\n");
  EXPECT_EQ(ok_reply("2 320"), "+OK 2 320\r\n");
  EXPECT_EQ(ok_reply("POP3 server ready <1896.697170952@dbc.mtview.ca.us>"),
            "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n");
}

struct ErrCase {
  RespCode code;
  std::string text;
  std::string expected;
};

class Pop3ErrReplyTest : public testing::TestWithParam<ErrCase> {};

TEST_P(Pop3ErrReplyTest, Formats) {
  EXPECT_EQ(err_reply(GetParam().code, GetParam().text), GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(
    Codes, Pop3ErrReplyTest,
    testing::Values(
        ErrCase{RespCode::kNone, "no such message", "-ERR no such message\r\n"},
        ErrCase{RespCode::kNone, "", "-ERR\r\n"},
        ErrCase{RespCode::kAuth, "invalid credentials", "-ERR [AUTH] invalid credentials\r\n"},
        ErrCase{RespCode::kAuth, "", "-ERR [AUTH]\r\n"},
        ErrCase{RespCode::kSysTemp, "upstream unavailable",
                "-ERR [SYS/TEMP] upstream unavailable\r\n"},
        ErrCase{RespCode::kSysPerm, "mailbox gone", "-ERR [SYS/PERM] mailbox gone\r\n"},
        ErrCase{RespCode::kInUse, "maildrop locked", "-ERR [IN-USE] maildrop locked\r\n"},
        ErrCase{RespCode::kLoginDelay, "wait", "-ERR [LOGIN-DELAY] wait\r\n"}));

TEST(Pop3ReplyTest, FirstLineIsAtMost512Octets) {
  for (const std::size_t size : {490u, 500u, 505u, 506u, 507u, 508u, 509u, 600u, 100000u}) {
    const std::string text(size, 't');
    const std::string ok = ok_reply(text);
    EXPECT_LE(ok.size(), 512u) << size;
    EXPECT_EQ(ok.substr(ok.size() - 2), "\r\n");
    EXPECT_EQ(ok.find('\r'), ok.size() - 2);
    const std::string err = err_reply(RespCode::kLoginDelay, text);
    EXPECT_LE(err.size(), 512u) << size;
    EXPECT_EQ(err.rfind("-ERR [LOGIN-DELAY] t", 0), 0u);
    EXPECT_EQ(err.substr(err.size() - 2), "\r\n");
  }
  // The longest text that fits is kept whole; one more octet is cut.
  EXPECT_EQ(ok_reply(std::string(506, 'a')).size(), 512u);
  EXPECT_EQ(ok_reply(std::string(507, 'a')), "+OK " + std::string(506, 'a') + "\r\n");
  EXPECT_EQ(err_reply(RespCode::kNone, std::string(505, 'a')).size(), 512u);
}

TEST(Pop3ReplyTest, TruncationKeepsUtf8Whole) {
  // 506 octets fit after "+OK "; a two-octet character starting at offset 505 must go
  // entirely.
  const std::string text = std::string(505, 'a') + "\xc3\xa9" + "tail";
  EXPECT_EQ(ok_reply(text), "+OK " + std::string(505, 'a') + "\r\n");
}

TEST(Pop3ReplyTest, LineBreaksInTextCannotForgeAReply) {
  EXPECT_EQ(ok_reply("a\r\n+OK forged"), "+OK a  +OK forged\r\n");
  EXPECT_EQ(err_reply(RespCode::kNone, "x\ny\0z"s), "-ERR x y z\r\n");
}

// Output of one stuffing run, input cut at the given offsets.
std::string stuff(std::string_view input, const std::vector<std::size_t>& cuts,
                  std::uint64_t* octets = nullptr) {
  DotStuffer stuffer;
  std::string out = "+OK\r\n";  // appends, never overwrites
  std::size_t from = 0;
  for (const std::size_t cut : cuts) {
    stuffer.feed(input.substr(from, cut - from), out);
    from = cut;
  }
  stuffer.feed(input.substr(from), out);
  stuffer.finish(out);
  if (octets != nullptr) {
    *octets = stuffer.octets();
  }
  return out;
}

struct StuffCase {
  const char* name;
  std::string input;
  std::string output;  // after "+OK\r\n"
};

class DotStufferTest : public testing::TestWithParam<StuffCase> {};

TEST_P(DotStufferTest, Whole) {
  std::uint64_t octets = 0;
  EXPECT_EQ(stuff(GetParam().input, {}, &octets), "+OK\r\n" + GetParam().output);
  EXPECT_EQ(octets, GetParam().input.size());
}

TEST_P(DotStufferTest, EverySplitPoint) {
  const StuffCase& c = GetParam();
  for (std::size_t i = 0; i <= c.input.size(); ++i) {
    EXPECT_EQ(stuff(c.input, {i}), "+OK\r\n" + c.output) << "split at " << i;
  }
}

TEST_P(DotStufferTest, EveryPairOfSplitPoints) {
  const StuffCase& c = GetParam();
  for (std::size_t i = 0; i <= c.input.size(); ++i) {
    for (std::size_t j = i; j <= c.input.size(); ++j) {
      EXPECT_EQ(stuff(c.input, {i, j}), "+OK\r\n" + c.output) << i << ", " << j;
    }
  }
}

TEST_P(DotStufferTest, OneByteAtATime) {
  const StuffCase& c = GetParam();
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < c.input.size(); ++i) {
    cuts.push_back(i);
  }
  std::uint64_t octets = 0;
  EXPECT_EQ(stuff(c.input, cuts, &octets), "+OK\r\n" + c.output);
  EXPECT_EQ(octets, c.input.size());
}

INSTANTIATE_TEST_SUITE_P(
    Messages, DotStufferTest,
    testing::Values(StuffCase{"Empty", "", ".\r\n"},
                    StuffCase{"Plain", "Subject: x\r\n\r\nbody\r\n",
                              "Subject: x\r\n\r\nbody\r\n.\r\n"},
                    StuffCase{"DotFirst", ".hidden\r\n", "..hidden\r\n.\r\n"},
                    StuffCase{"LoneDotLine", "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
                    StuffCase{"DotDot", "..\r\n", "...\r\n.\r\n"},
                    StuffCase{"DotNotAtLineStart", "a.b\r\n x.\r\n", "a.b\r\n x.\r\n.\r\n"},
                    StuffCase{"ManyDotLines", ".\r\n.\r\n.\r\n", "..\r\n..\r\n..\r\n.\r\n"},
                    StuffCase{"BareLfStartsALine", "a\n.b\n", "a\n..b\n.\r\n"},
                    StuffCase{"CrAloneDoesNotStartALine", "a\r.b\r\n", "a\r.b\r\n.\r\n"},
                    StuffCase{"NoFinalLineEnd", "body", "body\r\n.\r\n"},
                    StuffCase{"NoFinalLineEndAfterCr", "body\r", "body\r\r\n.\r\n"},
                    StuffCase{"EndsWithDot", "x\r\n.", "x\r\n..\r\n.\r\n"},
                    StuffCase{"OnlyADot", ".", "..\r\n.\r\n"},
                    StuffCase{"EmptyLines", "\r\n\r\n", "\r\n\r\n.\r\n"},
                    StuffCase{"Binary", "\0.\n.\0"s, "\0.\n..\0\r\n.\r\n"s}),
    [](const testing::TestParamInfo<StuffCase>& info) { return std::string(info.param.name); });

TEST(DotStufferTest, LargeMessageInChunks) {
  std::string message;
  std::string expected;
  for (int i = 0; i < 2000; ++i) {
    const std::string line = (i % 3 == 0 ? "." : "") + std::to_string(i) + "\r\n";
    message += line;
    expected += (i % 3 == 0 ? "." : "") + line;
  }
  expected += ".\r\n";
  for (const std::size_t chunk : {1u, 7u, 4096u}) {
    DotStuffer stuffer;
    std::string out;
    for (std::size_t i = 0; i < message.size(); i += chunk) {
      stuffer.feed(std::string_view(message).substr(i, chunk), out);
    }
    stuffer.finish(out);
    EXPECT_EQ(out, expected) << chunk;
    EXPECT_EQ(stuffer.octets(), message.size());
  }
}

// TOP output for a message cut at the given offsets; stops feeding once done, as the
// session does.
std::string top(std::string_view message, std::uint64_t lines, const std::vector<std::size_t>& cuts,
                bool* done = nullptr) {
  TopFilter filter(lines);
  std::string out;
  std::size_t from = 0;
  for (const std::size_t cut : cuts) {
    const std::string_view chunk = message.substr(from, cut - from);
    const std::string_view taken = filter.take(chunk);
    EXPECT_EQ(taken.data(), chunk.data());  // a prefix of the chunk
    EXPECT_LE(taken.size(), chunk.size());
    out += taken;
    from = cut;
  }
  out += filter.take(message.substr(from));
  if (done != nullptr) {
    *done = filter.done();
  }
  return out;
}

struct TopCase {
  const char* name;
  std::string message;
  std::uint64_t lines;
  std::string output;
  bool done;
};

class TopFilterTest : public testing::TestWithParam<TopCase> {};

TEST_P(TopFilterTest, Whole) {
  bool done = false;
  EXPECT_EQ(top(GetParam().message, GetParam().lines, {}, &done), GetParam().output);
  EXPECT_EQ(done, GetParam().done);
}

TEST_P(TopFilterTest, EverySplitPoint) {
  const TopCase& c = GetParam();
  for (std::size_t i = 0; i <= c.message.size(); ++i) {
    bool done = false;
    EXPECT_EQ(top(c.message, c.lines, {i}, &done), c.output) << "split at " << i;
    EXPECT_EQ(done, c.done);
  }
}

TEST_P(TopFilterTest, EveryPairOfSplitPoints) {
  const TopCase& c = GetParam();
  for (std::size_t i = 0; i <= c.message.size(); ++i) {
    for (std::size_t j = i; j <= c.message.size(); ++j) {
      EXPECT_EQ(top(c.message, c.lines, {i, j}), c.output) << i << ", " << j;
    }
  }
}

TEST_P(TopFilterTest, OneByteAtATime) {
  const TopCase& c = GetParam();
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < c.message.size(); ++i) {
    cuts.push_back(i);
  }
  bool done = false;
  EXPECT_EQ(top(c.message, c.lines, cuts, &done), c.output);
  EXPECT_EQ(done, c.done);
}

const std::string kHeader = "From: a@example.org\r\nSubject: hi\r\n";
const std::string kBody = "line 1\r\nline 2\r\n\r\nline 4\r\n";

INSTANTIATE_TEST_SUITE_P(
    Messages, TopFilterTest,
    testing::Values(
        TopCase{"ZeroLines", kHeader + "\r\n" + kBody, 0, kHeader + "\r\n", true},
        TopCase{"OneLine", kHeader + "\r\n" + kBody, 1, kHeader + "\r\nline 1\r\n", true},
        TopCase{"EmptyBodyLineCounts", kHeader + "\r\n" + kBody, 3,
                kHeader + "\r\nline 1\r\nline 2\r\n\r\n", true},
        TopCase{"AllLines", kHeader + "\r\n" + kBody, 4, kHeader + "\r\n" + kBody, true},
        TopCase{"MoreLinesThanBody", kHeader + "\r\n" + kBody, 10, kHeader + "\r\n" + kBody, false},
        TopCase{"BodyWithoutFinalLf", kHeader + "\r\nonly", 5, kHeader + "\r\nonly", false},
        TopCase{"NoBlankLine", kHeader, 0, kHeader, false},
        TopCase{"EmptyMessage", "", 0, "", false},
        TopCase{"BlankLineFirst", "\r\nbody\r\nmore\r\n", 1, "\r\nbody\r\n", true},
        TopCase{"BareLfBlankLine", "A: b\n\nbody\nmore\n", 1, "A: b\n\nbody\n", true},
        TopCase{"CrCrLfIsNotBlank", "A: b\r\n\r\r\nX\r\n\r\nbody\r\n", 0, "A: b\r\n\r\r\nX\r\n\r\n",
                true},
        TopCase{"CrInsideHeader", "A: \rb\r\n\r\nbody\r\n", 0, "A: \rb\r\n\r\n", true},
        TopCase{"HeaderLineStartingWithCr", "\rA: b\r\n\r\nbody\r\n", 0, "\rA: b\r\n\r\n", true},
        TopCase{"BodyBlankLinesAreLines", "A: b\r\n\r\n\r\n\r\n\r\nx\r\n", 2,
                "A: b\r\n\r\n\r\n\r\n", true},
        TopCase{"HugeCount", kHeader + "\r\n" + kBody, 18446744073709551615u,
                kHeader + "\r\n" + kBody, false}),
    [](const testing::TestParamInfo<TopCase>& info) { return std::string(info.param.name); });

TEST(TopFilterTest, InBodyAndDropsEverythingOnceDone) {
  TopFilter filter(1);
  EXPECT_FALSE(filter.in_body());
  EXPECT_EQ(filter.take("A: b\r\n"), "A: b\r\n");
  EXPECT_FALSE(filter.in_body());
  EXPECT_EQ(filter.take("\r"), "\r");
  EXPECT_FALSE(filter.in_body());
  EXPECT_EQ(filter.take("\nfirst"), "\nfirst");
  EXPECT_TRUE(filter.in_body());
  EXPECT_FALSE(filter.done());
  EXPECT_EQ(filter.take(" line\r\nsecond\r\n"), " line\r\n");
  EXPECT_TRUE(filter.done());
  EXPECT_EQ(filter.take("third\r\n"), "");
  EXPECT_EQ(filter.take(""), "");
}

TEST(TopFilterTest, FeedsIntoTheStuffer) {
  // The session's pipeline for TOP: filter, then stuff, then terminate.
  const std::string message = "A: b\r\n\r\n.one\r\ntwo\r\n.three\r\n";
  TopFilter filter(1);
  DotStuffer stuffer;
  std::string out;
  for (const char octet : message) {
    stuffer.feed(filter.take(std::string_view(&octet, 1)), out);
  }
  stuffer.finish(out);
  EXPECT_EQ(out, "A: b\r\n\r\n..one\r\n.\r\n");
}

TEST(DotStufferTest, OutlookNoNulsReplacesEveryNulAndCountsTheSameOctets) {
  const std::string message = "\0A: b\r\n\r\n.\0x\0\r\n"s;
  for (const std::size_t chunk : {1u, 3u, 64u}) {
    DotStuffer stuffer(true);
    std::string out = "+OK\r\n\0"s;  // what the buffer held before stays as it was
    for (std::size_t i = 0; i < message.size(); i += chunk) {
      stuffer.feed(std::string_view(message).substr(i, chunk), out);
    }
    stuffer.finish(out);
    EXPECT_EQ(out,
              "+OK\r\n\0\x80"
              "A: b\r\n\r\n..\x80x\x80\r\n.\r\n"s)
        << chunk;
    EXPECT_EQ(stuffer.octets(), message.size());
  }
  DotStuffer plain;
  std::string out;
  plain.feed(message, out);
  EXPECT_EQ(out.find('\x80'), std::string::npos) << "off by default";
}

TEST(DotStufferTest, FinishWithEmptyLineCompletesTheLastLineFirst) {
  for (const auto& [message, expected] : std::vector<std::pair<std::string, std::string>>{
           {"A: b\r\n", "A: b\r\n\r\n.\r\n"},
           {"A: b", "A: b\r\n\r\n.\r\n"},
           {"", "\r\n.\r\n"},
       }) {
    DotStuffer stuffer;
    std::string out;
    stuffer.feed(message, out);
    stuffer.finish_with_empty_line(out);
    EXPECT_EQ(out, expected) << message;
    EXPECT_EQ(stuffer.octets(), message.size());
  }
}

TEST(TopFilterTest, WholeMessagePassesEverythingAndSeesTheHeaderEnd) {
  TopFilter with_body = TopFilter::whole_message();
  std::string body(100000, 'x');
  for (std::size_t i = 0; i < body.size(); i += 50) {
    body[i] = '\n';
  }
  EXPECT_EQ(with_body.take("A: b\r\n\r\n"), "A: b\r\n\r\n");
  EXPECT_EQ(with_body.take(body), body);
  EXPECT_TRUE(with_body.in_body());
  EXPECT_FALSE(with_body.done());

  TopFilter header_only = TopFilter::whole_message();
  EXPECT_EQ(header_only.take("A: b\r\nC: d\r\n"), "A: b\r\nC: d\r\n");
  EXPECT_FALSE(header_only.in_body());
}

}  // namespace
}  // namespace popbridge::protocol
