// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/pop3_command.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/pop3/line_reader.h"

namespace popbridge::protocol {
namespace {

using namespace std::string_literals;

struct ValidCase {
  const char* name;
  std::string line;
  Pop3Verb verb;
  std::optional<std::uint32_t> message = std::nullopt;
  std::uint64_t lines = 0;
  std::string argument = "";
  std::string secret = "";
  std::optional<std::string> initial_response = std::nullopt;
};

class Pop3CommandValidTest : public testing::TestWithParam<ValidCase> {};

TEST_P(Pop3CommandValidTest, Parses) {
  const ValidCase& c = GetParam();
  const Pop3ParseResult result = parse_pop3_command(c.line);
  ASSERT_TRUE(std::holds_alternative<Pop3Command>(result))
      << "error: " << std::get<Pop3ParseError>(result).message;
  const auto& command = std::get<Pop3Command>(result);
  EXPECT_EQ(command.verb, c.verb);
  EXPECT_EQ(command.message, c.message);
  EXPECT_EQ(command.lines, c.lines);
  EXPECT_EQ(command.argument, c.argument);
  EXPECT_EQ(command.secret.view(), c.secret);
  ASSERT_EQ(command.initial_response.has_value(), c.initial_response.has_value());
  if (c.initial_response) {
    EXPECT_EQ(command.initial_response->view(), *c.initial_response);
  }
}

const std::string kLongToken(16000, 'A');

INSTANTIATE_TEST_SUITE_P(
    Commands, Pop3CommandValidTest,
    testing::Values(
        ValidCase{"User", "USER alice", Pop3Verb::kUser, {}, 0, "alice"},
        ValidCase{
            "UserLowerCase", "user alice@example.org", Pop3Verb::kUser, {}, 0, "alice@example.org"},
        ValidCase{"UserExtraSpaces", "USER  alice  ", Pop3Verb::kUser, {}, 0, "alice"},
        ValidCase{"UserUtf8", "USER j\xc3\xb6rg", Pop3Verb::kUser, {}, 0, "j\xc3\xb6rg"},
        ValidCase{"UserAtTheLineLimit",
                  "USER " + std::string(248, 'u'),
                  Pop3Verb::kUser,
                  {},
                  0,
                  std::string(248, 'u')},
        ValidCase{"Pass", "PASS secret", Pop3Verb::kPass, {}, 0, "", "secret"},
        ValidCase{"PassWithSpaces", "PASS two words ", Pop3Verb::kPass, {}, 0, "", "two words "},
        ValidCase{"PassLeadingSpaceIsPassword", "PASS  x", Pop3Verb::kPass, {}, 0, "", " x"},
        ValidCase{"PassMixedCase", "pAsS p@ss:w0rd", Pop3Verb::kPass, {}, 0, "", "p@ss:w0rd"},
        ValidCase{"PassAtTheLineLimit",
                  "PASS " + std::string(248, 'p'),
                  Pop3Verb::kPass,
                  {},
                  0,
                  "",
                  std::string(248, 'p')},
        ValidCase{"Apop",
                  "APOP mrose c4c9334bac560ecc979e58001b3e22fb",
                  Pop3Verb::kApop,
                  {},
                  0,
                  "mrose",
                  "c4c9334bac560ecc979e58001b3e22fb"},
        ValidCase{"Stat", "STAT", Pop3Verb::kStat},
        ValidCase{"StatMixedCase", "sTaT", Pop3Verb::kStat},
        ValidCase{"StatTrailingSpace", "STAT ", Pop3Verb::kStat},
        ValidCase{"ListAll", "LIST", Pop3Verb::kList},
        ValidCase{"ListOne", "LIST 1", Pop3Verb::kList, 1u},
        ValidCase{"ListLeadingZeros", "list 007", Pop3Verb::kList, 7u},
        ValidCase{"ListMaxNumber", "LIST 4294967295", Pop3Verb::kList, 4294967295u},
        ValidCase{"UidlAll", "UIDL", Pop3Verb::kUidl},
        ValidCase{"UidlOne", "uidl 42", Pop3Verb::kUidl, 42u},
        ValidCase{"Retr", "RETR 1", Pop3Verb::kRetr, 1u},
        ValidCase{"RetrExtraSpaces", "RETR   17  ", Pop3Verb::kRetr, 17u},
        ValidCase{"Dele", "DELE 3", Pop3Verb::kDele, 3u},
        ValidCase{"TopZeroLines", "TOP 1 0", Pop3Verb::kTop, 1u, 0},
        ValidCase{"Top", "top 2 10", Pop3Verb::kTop, 2u, 10},
        ValidCase{"TopMaxLines", "TOP 1 18446744073709551615", Pop3Verb::kTop, 1u,
                  18446744073709551615u},
        ValidCase{"Rset", "RSET", Pop3Verb::kRset}, ValidCase{"Noop", "noop", Pop3Verb::kNoop},
        ValidCase{"Quit", "QUIT", Pop3Verb::kQuit}, ValidCase{"Capa", "CAPA", Pop3Verb::kCapa},
        ValidCase{"Stls", "STLS", Pop3Verb::kStls}, ValidCase{"AuthList", "AUTH", Pop3Verb::kAuth},
        ValidCase{"AuthMechanism", "AUTH plain", Pop3Verb::kAuth, {}, 0, "PLAIN"},
        ValidCase{"AuthMechanismChars", "auth Scram-sha_1", Pop3Verb::kAuth, {}, 0, "SCRAM-SHA_1"},
        ValidCase{"AuthInitialResponse",
                  "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
                  Pop3Verb::kAuth,
                  {},
                  0,
                  "PLAIN",
                  "",
                  "AGFsaWNlAHNlY3JldA=="},
        ValidCase{
            "AuthEmptyInitialResponse", "AUTH PLAIN =", Pop3Verb::kAuth, {}, 0, "PLAIN", "", "="},
        ValidCase{"AuthInitialResponseVerbatim",
                  "AUTH LOGIN not*base64",
                  Pop3Verb::kAuth,
                  {},
                  0,
                  "LOGIN",
                  "",
                  "not*base64"},
        ValidCase{"AuthLongToken",
                  "AUTH XOAUTH2 " + kLongToken,
                  Pop3Verb::kAuth,
                  {},
                  0,
                  "XOAUTH2",
                  "",
                  kLongToken},
        ValidCase{"AuthAtTheAuthLimit",
                  "AUTH X " + std::string(kMaxAuthLine - 7, 'B'),
                  Pop3Verb::kAuth,
                  {},
                  0,
                  "X",
                  "",
                  std::string(kMaxAuthLine - 7, 'B')}),
    [](const testing::TestParamInfo<ValidCase>& info) { return std::string(info.param.name); });

struct ErrorCase {
  const char* name;
  std::string line;
  std::string message;
};

class Pop3CommandErrorTest : public testing::TestWithParam<ErrorCase> {};

TEST_P(Pop3CommandErrorTest, Rejects) {
  const ErrorCase& c = GetParam();
  const Pop3ParseResult result = parse_pop3_command(c.line);
  ASSERT_TRUE(std::holds_alternative<Pop3ParseError>(result));
  EXPECT_EQ(std::get<Pop3ParseError>(result).message, c.message);
}

constexpr const char* kInvalidNumber = "syntax error: invalid message number";
constexpr const char* kBadTop = "syntax error: TOP needs a message number and a line count";
constexpr const char* kBadChar = "invalid character in command";

INSTANTIATE_TEST_SUITE_P(
    Malformed, Pop3CommandErrorTest,
    testing::Values(
        ErrorCase{"Empty", "", "empty command"}, ErrorCase{"Unknown", "XYZZY", "unknown command"},
        ErrorCase{"UnknownPrefix", "STA", "unknown command"},
        ErrorCase{"VerbWithSuffix", "RETRX 1", "unknown command"},
        ErrorCase{"LeadingSpace", " STAT", "unknown command"},
        ErrorCase{"OnlySpaces", "   ", "unknown command"},
        ErrorCase{"ImapCommand", "a1 LOGIN user pass", "unknown command"},
        ErrorCase{"Nul", "STAT\0"s, kBadChar},
        ErrorCase{"NulInPassword", "PASS se\0cret"s, kBadChar},
        ErrorCase{"Tab", "USER a\tb", kBadChar}, ErrorCase{"StrayCr", "NOOP\r", kBadChar},
        ErrorCase{"Lf", "NOOP\nQUIT", kBadChar}, ErrorCase{"Del", "USER a\x7f", kBadChar},
        ErrorCase{"StatArgument", "STAT 1", "syntax error: STAT takes no arguments"},
        ErrorCase{"RsetArgument", "RSET x", "syntax error: RSET takes no arguments"},
        ErrorCase{"NoopArgument", "NOOP 1", "syntax error: NOOP takes no arguments"},
        ErrorCase{"QuitArgument", "QUIT now", "syntax error: QUIT takes no arguments"},
        ErrorCase{"CapaArgument", "CAPA x", "syntax error: CAPA takes no arguments"},
        ErrorCase{"StlsArgument", "STLS x", "syntax error: STLS takes no arguments"},
        ErrorCase{"ListTwo", "LIST 1 2", "syntax error: LIST takes at most one message number"},
        ErrorCase{"UidlTwo", "UIDL 1 2", "syntax error: UIDL takes at most one message number"},
        ErrorCase{"ListZero", "LIST 0", kInvalidNumber},
        ErrorCase{"ListZeros", "LIST 000", kInvalidNumber},
        ErrorCase{"ListPlus", "LIST +1", kInvalidNumber},
        ErrorCase{"ListMinus", "LIST -1", kInvalidNumber},
        ErrorCase{"ListSuffix", "LIST 1x", kInvalidNumber},
        ErrorCase{"ListHex", "LIST 0x1", kInvalidNumber},
        ErrorCase{"ListOverflow32", "LIST 4294967296", kInvalidNumber},
        ErrorCase{"ListOverflow64", "LIST 18446744073709551617", kInvalidNumber},
        ErrorCase{"ListHuge", "LIST 99999999999999999999999999999", kInvalidNumber},
        ErrorCase{"UidlWord", "UIDL abc", kInvalidNumber},
        ErrorCase{"RetrMissing", "RETR", "syntax error: RETR needs a message number"},
        ErrorCase{"RetrSpaceOnly", "RETR ", "syntax error: RETR needs a message number"},
        ErrorCase{"RetrTwo", "RETR 1 2", "syntax error: RETR needs a message number"},
        ErrorCase{"RetrZero", "RETR 0", kInvalidNumber},
        ErrorCase{"RetrNegative", "RETR -5", kInvalidNumber},
        ErrorCase{"DeleMissing", "DELE", "syntax error: DELE needs a message number"},
        ErrorCase{"DeleOverflow", "DELE 4294967296", kInvalidNumber},
        ErrorCase{"TopMissingLines", "TOP 1", kBadTop}, ErrorCase{"TopMissingBoth", "TOP", kBadTop},
        ErrorCase{"TopThree", "TOP 1 2 3", kBadTop},
        ErrorCase{"TopZeroMessage", "TOP 0 1", kInvalidNumber},
        ErrorCase{"TopNegativeLines", "TOP 1 -1", "syntax error: invalid line count"},
        ErrorCase{"TopLinesOverflow", "TOP 1 18446744073709551616",
                  "syntax error: invalid line count"},
        ErrorCase{"UserMissing", "USER", "syntax error: USER needs one user name"},
        ErrorCase{"UserSpaceOnly", "USER ", "syntax error: USER needs one user name"},
        ErrorCase{"UserTwo", "USER a b", "syntax error: USER needs one user name"},
        ErrorCase{"PassMissing", "PASS", "syntax error: PASS needs a password"},
        ErrorCase{"PassEmpty", "PASS ", "syntax error: PASS needs a password"},
        ErrorCase{"ApopOne", "APOP mrose", "syntax error: APOP needs a name and a digest"},
        ErrorCase{"ApopThree", "APOP a b c", "syntax error: APOP needs a name and a digest"},
        ErrorCase{"AuthThree", "AUTH PLAIN abc def",
                  "syntax error: AUTH takes a mechanism and an optional initial response"},
        ErrorCase{"AuthBadMechanism", "AUTH PL@IN", "syntax error: invalid mechanism name"},
        ErrorCase{"AuthMechanismTooLong", "AUTH " + std::string(21, 'M'),
                  "syntax error: invalid mechanism name"},
        ErrorCase{"AuthMechanismUtf8", "AUTH PL\xc3\x84IN", "syntax error: invalid mechanism name"},
        ErrorCase{"NoopTooLong", "NOOP" + std::string(250, ' '), "line too long"},
        ErrorCase{"UserTooLong", "USER " + std::string(249, 'u'), "line too long"},
        ErrorCase{"PassTooLong", "PASS " + std::string(249, 'p'), "line too long"},
        ErrorCase{"UnknownTooLong", "XYZW " + std::string(300, 'x'), "line too long"},
        ErrorCase{"TooLongBeatsBadChar", "NOOP " + std::string(300, '\0'), "line too long"},
        ErrorCase{"AuthTooLong", "AUTH X " + std::string(kMaxAuthLine - 6, 'B'), "line too long"}),
    [](const testing::TestParamInfo<ErrorCase>& info) { return std::string(info.param.name); });

TEST(Pop3CommandTest, EveryVerbHasItsName) {
  const std::vector<std::pair<Pop3Verb, std::string_view>> names = {
      {Pop3Verb::kUser, "USER"}, {Pop3Verb::kPass, "PASS"}, {Pop3Verb::kApop, "APOP"},
      {Pop3Verb::kStat, "STAT"}, {Pop3Verb::kList, "LIST"}, {Pop3Verb::kUidl, "UIDL"},
      {Pop3Verb::kRetr, "RETR"}, {Pop3Verb::kTop, "TOP"},   {Pop3Verb::kDele, "DELE"},
      {Pop3Verb::kRset, "RSET"}, {Pop3Verb::kNoop, "NOOP"}, {Pop3Verb::kQuit, "QUIT"},
      {Pop3Verb::kCapa, "CAPA"}, {Pop3Verb::kStls, "STLS"}, {Pop3Verb::kAuth, "AUTH"},
  };
  ASSERT_EQ(names.size(), kPop3VerbCount);
  for (const auto& [verb, name] : names) {
    EXPECT_EQ(verb_name(verb), name);
  }
}

TEST(Pop3CommandTest, LowerCaseVerbsOfEveryNameParse) {
  // Each verb with the arguments it needs, in lower case.
  const std::vector<std::pair<std::string, Pop3Verb>> lines = {
      {"user a", Pop3Verb::kUser}, {"pass b", Pop3Verb::kPass}, {"apop a b", Pop3Verb::kApop},
      {"stat", Pop3Verb::kStat},   {"list", Pop3Verb::kList},   {"uidl", Pop3Verb::kUidl},
      {"retr 1", Pop3Verb::kRetr}, {"top 1 1", Pop3Verb::kTop}, {"dele 1", Pop3Verb::kDele},
      {"rset", Pop3Verb::kRset},   {"noop", Pop3Verb::kNoop},   {"quit", Pop3Verb::kQuit},
      {"capa", Pop3Verb::kCapa},   {"stls", Pop3Verb::kStls},   {"auth", Pop3Verb::kAuth},
  };
  for (const auto& [line, verb] : lines) {
    const Pop3ParseResult result = parse_pop3_command(line);
    ASSERT_TRUE(std::holds_alternative<Pop3Command>(result)) << line;
    EXPECT_EQ(std::get<Pop3Command>(result).verb, verb) << line;
  }
}

TEST(Pop3CommandTest, ErrorMessagesFitAnErrLine) {
  // Messages are sent as "-ERR <message>": they must not echo client bytes.
  for (const std::string& line : {"XYZZY secret"s, "PASS"s, "USER a\tsecret"s, "LIST secret"s}) {
    const Pop3ParseResult result = parse_pop3_command(line);
    ASSERT_TRUE(std::holds_alternative<Pop3ParseError>(result));
    const std::string& message = std::get<Pop3ParseError>(result).message;
    EXPECT_EQ(message.find("secret"), std::string::npos) << message;
    EXPECT_FALSE(message.empty());
  }
}

// One line of output per parsed command, to compare whole transcripts.
std::string describe(const Pop3ParseResult& result) {
  if (const auto* error = std::get_if<Pop3ParseError>(&result)) {
    return "error: " + error->message;
  }
  const auto& command = std::get<Pop3Command>(result);
  std::string text(verb_name(command.verb));
  text += " message=" + (command.message ? std::to_string(*command.message) : "-");
  text += " lines=" + std::to_string(command.lines);
  text += " argument=" + command.argument;
  text += " secret=" + std::string(command.secret.view());
  if (command.initial_response) {
    text += " ir=" + std::string(command.initial_response->view());
  }
  return text;
}

std::vector<std::string> parse_stream(std::string_view input,
                                      const std::vector<std::size_t>& cuts) {
  LineReader reader(kMaxAuthLine);
  std::vector<std::string> results;
  auto drain = [&] {
    while (std::optional<LineReader::Line> line = reader.next()) {
      results.push_back(line->too_long ? "too long" : describe(parse_pop3_command(line->text)));
    }
  };
  std::size_t from = 0;
  for (const std::size_t cut : cuts) {
    reader.append(input.substr(from, cut - from));
    drain();
    from = cut;
  }
  reader.append(input.substr(from));
  drain();
  return results;
}

TEST(Pop3CommandStreamTest, EverySplitPointGivesTheSameCommands) {
  const std::string session =
      "CAPA\r\nUSER alice\r\nPASS a secret with spaces\r\nSTAT\r\nLIST\r\nlist 2\r\n"
      "TOP 1 0\r\nRETR 0\r\nDELE 1\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nbogus\r\n\r\n"
      "NOOP " +
      std::string(300, 'x') + "\r\nUIDL 1\nQUIT\r\n";
  const std::vector<std::string> expected = parse_stream(session, {});
  ASSERT_EQ(expected.size(), 15u);
  EXPECT_EQ(expected[2], "PASS message=- lines=0 argument= secret=a secret with spaces");
  EXPECT_EQ(expected[7], "error: syntax error: invalid message number");
  EXPECT_EQ(expected[11], "error: empty command");
  EXPECT_EQ(expected[12], "error: line too long");
  EXPECT_EQ(expected[13], "UIDL message=1 lines=0 argument= secret=");
  for (std::size_t i = 0; i <= session.size(); ++i) {
    EXPECT_EQ(parse_stream(session, {i}), expected) << "split at " << i;
  }
  std::vector<std::size_t> every_byte;
  for (std::size_t i = 1; i < session.size(); ++i) {
    every_byte.push_back(i);
  }
  EXPECT_EQ(parse_stream(session, every_byte), expected);
}

}  // namespace
}  // namespace popbridge::protocol
