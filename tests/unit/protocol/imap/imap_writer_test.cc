// SPDX-License-Identifier: Apache-2.0
#include "protocol/imap/imap_writer.h"

#include <gtest/gtest.h>

#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace popbridge::protocol {
namespace {

using namespace std::string_literals;

struct WriterCase {
  const char* name;
  std::function<ImapCommand()> build;
  bool literal_plus;
  std::vector<std::string> expected;
};

void PrintTo(const WriterCase& c, std::ostream* os) { *os << c.name; }

class ImapWriterTest : public testing::TestWithParam<WriterCase> {};

TEST_P(ImapWriterTest, Renders) {
  const WriterCase& c = GetParam();
  EXPECT_EQ(c.build().render("a1", c.literal_plus), c.expected);
}

const std::string kLong1024(1024, 'x');
const std::string kLong1025(1025, 'x');

INSTANTIATE_TEST_SUITE_P(
    Commands, ImapWriterTest,
    testing::Values(
        WriterCase{
            "NoArguments", [] { return ImapCommand("CAPABILITY"); }, false, {"a1 CAPABILITY\r\n"}},
        WriterCase{"LoginAtoms",
                   [] { return ImapCommand("LOGIN").astring("alice").astring("s3cr3t"); },
                   false,
                   {"a1 LOGIN alice s3cr3t\r\n"}},
        WriterCase{"RawArguments",
                   [] { return ImapCommand("UID FETCH").raw("1:*").raw("(UID RFC822.SIZE)"); },
                   false,
                   {"a1 UID FETCH 1:* (UID RFC822.SIZE)\r\n"}},
        WriterCase{
            "RawFlags",
            [] { return ImapCommand("UID STORE").raw("1:3,5").raw("+FLAGS.SILENT (\\Deleted)"); },
            false,
            {"a1 UID STORE 1:3,5 +FLAGS.SILENT (\\Deleted)\r\n"}},
        WriterCase{"AstringWithSpaceIsQuoted",
                   [] { return ImapCommand("LOGIN").astring("alice smith").astring("pw"); },
                   false,
                   {"a1 LOGIN \"alice smith\" pw\r\n"}},
        WriterCase{"QuotedEscapes",
                   [] { return ImapCommand("LOGIN").astring("a\"b").astring("c\\d"); },
                   false,
                   {"a1 LOGIN \"a\\\"b\" \"c\\\\d\"\r\n"}},
        WriterCase{"AtomSpecialsAreQuoted",
                   [] {
                     return ImapCommand("X")
                         .astring("a]")
                         .astring("a%")
                         .astring("a*")
                         .astring("(a)")
                         .astring("a{1}");
                   },
                   false,
                   {"a1 X \"a]\" \"a%\" \"a*\" \"(a)\" \"a{1}\"\r\n"}},
        WriterCase{"EmptyIsQuoted",
                   [] { return ImapCommand("LOGIN").astring("").string(""); },
                   false,
                   {"a1 LOGIN \"\" \"\"\r\n"}},
        WriterCase{"StringIsNeverAnAtom",
                   [] { return ImapCommand("SELECT").string("INBOX"); },
                   false,
                   {"a1 SELECT \"INBOX\"\r\n"}},
        WriterCase{"EightBitIsASynchronisingLiteral",
                   [] { return ImapCommand("LOGIN").astring("alice").astring("p\xc3\xa4ssw"); },
                   false,
                   {"a1 LOGIN alice {6}\r\n", "p\xc3\xa4ssw\r\n"}},
        WriterCase{"LiteralPlusIsOnePart",
                   [] { return ImapCommand("LOGIN").astring("alice").astring("p\xc3\xa4ssw"); },
                   true,
                   {"a1 LOGIN alice {6+}\r\np\xc3\xa4ssw\r\n"}},
        WriterCase{"TwoLiterals",
                   [] { return ImapCommand("LOGIN").astring("a\r\nb").astring("c\nd"); },
                   false,
                   {"a1 LOGIN {4}\r\n", "a\r\nb {3}\r\n", "c\nd\r\n"}},
        WriterCase{"NulGoesAsLiteral",
                   [] { return ImapCommand("LOGIN").astring("u").astring("a\0b"s); },
                   true,
                   {"a1 LOGIN u {3+}\r\na\0b\r\n"s}},
        WriterCase{"ControlGoesAsLiteral",
                   [] { return ImapCommand("LOGIN").astring("u").astring("a\tb"); },
                   false,
                   {"a1 LOGIN u {3}\r\n", "a\tb\r\n"}},
        WriterCase{"QuotedUpTo1024",
                   [] { return ImapCommand("X").string(kLong1024); },
                   false,
                   {"a1 X \"" + kLong1024 + "\"\r\n"}},
        WriterCase{"LongerIsALiteral",
                   [] { return ImapCommand("X").astring(kLong1025 + " "); },
                   false,
                   {"a1 X {1026}\r\n", kLong1025 + " \r\n"}},
        WriterCase{"LongAtomStaysAnAtom",
                   [] { return ImapCommand("X").astring(kLong1025); },
                   false,
                   {"a1 X " + kLong1025 + "\r\n"}}),
    [](const testing::TestParamInfo<WriterCase>& info) { return std::string(info.param.name); });

TEST(ImapWriterTest, VerbIsKept) { EXPECT_EQ(ImapCommand("UID FETCH").verb(), "UID FETCH"); }

TEST(ImapWriterTest, RendersTwiceTheSame) {
  ImapCommand command("LOGIN");
  command.astring("alice").astring("x y");
  EXPECT_EQ(command.render("a7", false), command.render("a7", false));
  EXPECT_EQ(command.render("a8", true), std::vector<std::string>{"a8 LOGIN alice \"x y\"\r\n"});
}

struct UidSetCase {
  std::vector<unsigned> uids;
  std::string expected;
};

class CompressUidSetTest : public testing::TestWithParam<UidSetCase> {};

TEST_P(CompressUidSetTest, Compresses) {
  EXPECT_EQ(compress_uid_set(GetParam().uids), GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(
    Sets, CompressUidSetTest,
    testing::Values(UidSetCase{{}, ""}, UidSetCase{{7}, "7"}, UidSetCase{{7, 8}, "7:8"},
                    UidSetCase{{1, 2, 3, 5, 9, 10, 11, 12}, "1:3,5,9:12"},
                    UidSetCase{{1, 3, 5}, "1,3,5"}, UidSetCase{{1, 2, 4, 5}, "1:2,4:5"},
                    UidSetCase{{4294967294u, 4294967295u}, "4294967294:4294967295"},
                    UidSetCase{{1, 4294967295u}, "1,4294967295"}));

}  // namespace
}  // namespace popbridge::protocol

namespace popbridge::protocol {
namespace {

TEST(ImapWriterTest, AttachedClosesAListAfterALiteral) {
  ImapCommand command("SETMETADATA");
  command.string("INBOX").raw("(/private/vendor/popbridge/uidl-map").string("a\nb").attached(")");
  EXPECT_EQ(command.render("a3", true),
            std::vector<std::string>{
                "a3 SETMETADATA \"INBOX\" (/private/vendor/popbridge/uidl-map {3+}\r\na\nb)\r\n"});
  EXPECT_EQ(
      command.render("a4", false),
      (std::vector<std::string>{
          "a4 SETMETADATA \"INBOX\" (/private/vendor/popbridge/uidl-map {3}\r\n", "a\nb)\r\n"}));
}

}  // namespace
}  // namespace popbridge::protocol
