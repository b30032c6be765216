// SPDX-License-Identifier: Apache-2.0
#include "protocol/imap/imap_parser.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace popbridge::protocol {
namespace {

using namespace std::string_literals;

std::string printable(std::string_view bytes) {
  std::string out;
  for (char c : bytes) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

const char* kind_name(ImapStatusKind kind) {
  switch (kind) {
    case ImapStatusKind::kOk:
      return "OK";
    case ImapStatusKind::kNo:
      return "NO";
    case ImapStatusKind::kBad:
      return "BAD";
    case ImapStatusKind::kBye:
      return "BYE";
    case ImapStatusKind::kPreauth:
      return "PREAUTH";
  }
  return "?";
}

// Serialises events, one per line. Consecutive body chunks are merged so that any split
// of the input gives the same log; chunks counts them.
class Recorder : public ImapEvents {
 public:
  void on_status(const ImapStatus& s) override {
    add("status " + std::string(s.tag) + " " + kind_name(s.kind) + " [" + std::string(s.code) +
        "] " + std::string(s.text));
  }
  void on_continuation(std::string_view text) override { add("+ " + std::string(text)); }
  void on_capability(const std::vector<std::string_view>& capabilities) override {
    std::string line = "capability";
    for (std::string_view c : capabilities) {
      line += " <" + std::string(c) + ">";
    }
    add(line);
  }
  void on_exists(std::uint32_t count) override { add("exists " + std::to_string(count)); }
  void on_expunge(std::uint32_t sequence) override { add("expunge " + std::to_string(sequence)); }
  void on_fetch_begin(std::uint32_t sequence) override { add("fetch " + std::to_string(sequence)); }
  void on_fetch_uid(std::uint32_t uid) override { add("uid " + std::to_string(uid)); }
  void on_fetch_size(std::uint64_t size) override { add("size " + std::to_string(size)); }
  void on_fetch_flags(std::string_view flags) override { add("flags " + std::string(flags)); }
  void on_fetch_guid(std::string_view guid) override { add("guid " + std::string(guid)); }
  void on_body_begin(std::string_view section, std::uint64_t origin, std::uint64_t size) override {
    add("body [" + std::string(section) + "]<" + std::to_string(origin) + "> " +
        std::to_string(size));
  }
  void on_body_data(std::string_view chunk) override {
    data_ += chunk;
    ++chunks;
  }
  void on_body_end() override { add("end body"); }
  void on_fetch_end() override { add("end fetch"); }
  void on_other_untagged(std::string_view line) override { add("other " + std::string(line)); }
  void on_metadata(std::string_view entry, std::optional<std::string_view> value) override {
    add("metadata " + std::string(entry) + " " +
        (value ? "<" + printable(std::string(*value)) + ">" : std::string("NIL")));
  }

  std::string log() {
    flush();
    return log_;
  }
  std::size_t chunks = 0;

 private:
  void flush() {
    if (!data_.empty()) {
      log_ += "data " + printable(data_) + "\n";
      data_.clear();
    }
  }
  void add(const std::string& line) {
    flush();
    log_ += line + "\n";
  }
  std::string log_;
  std::string data_;
};

std::string outcome(Recorder& recorder, const ImapParser& parser) {
  std::string out = recorder.log();
  if (parser.failed()) {
    out += "error: " + parser.error() + "\n";
  }
  return out;
}

std::string parse_in_pieces(std::string_view input, const std::vector<std::size_t>& cuts,
                            std::size_t max_line) {
  Recorder recorder;
  ImapParser parser(recorder, max_line);
  std::size_t start = 0;
  for (std::size_t cut : cuts) {
    parser.feed(input.substr(start, cut - start));
    start = cut;
  }
  const bool ok = parser.feed(input.substr(start));
  EXPECT_EQ(ok, !parser.failed());
  return outcome(recorder, parser);
}

struct ParserCase {
  const char* name;
  std::string input;
  std::string expected;
  std::size_t max_line = 65536;
};

// Keeps gtest from dumping the struct's bytes.
void PrintTo(const ParserCase& c, std::ostream* os) { *os << c.name; }

class ImapParserTest : public testing::TestWithParam<ParserCase> {};

TEST_P(ImapParserTest, OneShot) {
  const ParserCase& c = GetParam();
  EXPECT_EQ(parse_in_pieces(c.input, {}, c.max_line), c.expected);
}

TEST_P(ImapParserTest, EverySplitPoint) {
  const ParserCase& c = GetParam();
  for (std::size_t cut = 0; cut <= c.input.size(); ++cut) {
    EXPECT_EQ(parse_in_pieces(c.input, {cut}, c.max_line), c.expected) << "split at " << cut;
  }
}

TEST_P(ImapParserTest, ByteByByte) {
  const ParserCase& c = GetParam();
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < c.input.size(); ++i) {
    cuts.push_back(i);
  }
  EXPECT_EQ(parse_in_pieces(c.input, cuts, c.max_line), c.expected);
}

INSTANTIATE_TEST_SUITE_P(
    Responses, ImapParserTest,
    testing::Values(
        // Greetings and status responses.
        ParserCase{"DovecotGreeting",
                   "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
                   "STARTTLS AUTH=PLAIN] Dovecot ready.\r\n",
                   "status * OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "
                   "LITERAL+ STARTTLS AUTH=PLAIN] Dovecot ready.\n"},
        ParserCase{"GreetingWithoutCode", "* OK IMAP4rev1 Service Ready\r\n",
                   "status * OK [] IMAP4rev1 Service Ready\n"},
        ParserCase{"Preauth", "* PREAUTH [CAPABILITY IMAP4rev1] Logged in as alice\r\n",
                   "status * PREAUTH [CAPABILITY IMAP4rev1] Logged in as alice\n"},
        ParserCase{"Bye", "* BYE Logging out\r\na9 OK Logout completed.\r\n",
                   "status * BYE [] Logging out\nstatus a9 OK [] Logout completed.\n"},
        ParserCase{"UntaggedNo", "* NO [ALERT] Disk quota nearly exceeded\r\n",
                   "status * NO [ALERT] Disk quota nearly exceeded\n"},
        ParserCase{"TaggedOk", "a1 OK Logged in\r\n", "status a1 OK [] Logged in\n"},
        ParserCase{"TaggedOkWithCapabilityCode",
                   "a1 OK [CAPABILITY IMAP4rev1 UIDPLUS MOVE] Logged in\r\n",
                   "status a1 OK [CAPABILITY IMAP4rev1 UIDPLUS MOVE] Logged in\n"},
        ParserCase{"TaggedOkLowerCase", "A0001 ok [read-write] done\r\n",
                   "status A0001 OK [read-write] done\n"},
        ParserCase{"TaggedOkWithoutText", "a1 OK\r\n", "status a1 OK [] \n"},
        ParserCase{"TaggedCodeOnly", "a1 OK [READ-ONLY]\r\n", "status a1 OK [READ-ONLY] \n"},
        ParserCase{"AuthenticationFailed",
                   "a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
                   "status a1 NO [AUTHENTICATIONFAILED] Authentication failed.\n"},
        ParserCase{"CyrusBareNo", "a1 NO Login failed\r\n", "status a1 NO [] Login failed\n"},
        ParserCase{"TaggedBad", "a2 BAD Error in IMAP command UID: Invalid arguments.\r\n",
                   "status a2 BAD [] Error in IMAP command UID: Invalid arguments.\n"},
        ParserCase{"UnterminatedCodeStaysText", "a1 OK [ALERT oops\r\n",
                   "status a1 OK [] [ALERT oops\n"},
        ParserCase{"BracesInTextAreNoLiteral", "a1 OK Welcome {5}\r\n",
                   "status a1 OK [] Welcome {5}\n"},
        ParserCase{"BareLfLineEnds", "* OK hi\na1 OK done\n",
                   "status * OK [] hi\nstatus a1 OK [] done\n"},

        // METADATA (RFC 5464): a literal value (a UIDL map), a quoted one, NIL.
        ParserCase{"MetadataLiteral",
                   "* METADATA \"INBOX\" (/private/vendor/popbridge/uidl-map {27}\r\n"
                   "uidvalidity 7\n1 old-uidl-1\n)\r\na1 OK done\r\n",
                   "metadata /private/vendor/popbridge/uidl-map <uidvalidity 7\\n1 "
                   "old-uidl-1\\n>\nstatus a1 OK [] done\n"},
        ParserCase{"MetadataQuoted", "* METADATA INBOX (/private/comment \"a \\\"b\\\" c\")\r\n",
                   "metadata /private/comment <a \"b\" c>\n"},
        ParserCase{"MetadataNil",
                   "* METADATA \"INBOX\" (/private/vendor/popbridge/uidl-map NIL)\r\n",
                   "metadata /private/vendor/popbridge/uidl-map NIL\n"},
        ParserCase{"MetadataEmptyLiteral", "* METADATA \"INBOX\" (/shared/x {0}\r\n)\r\n",
                   "metadata /shared/x <>\n"},
        ParserCase{"MetadataMalformed", "* METADATA \"INBOX\" /shared/x NIL\r\n",
                   "error: malformed METADATA: no entry list\n"},

        // Continuations.
        ParserCase{"ContinuationEmpty", "+ \r\n", "+ \n"},
        ParserCase{"ContinuationBare", "+\r\n", "+ \n"},
        ParserCase{"ContinuationBase64", "+ dXNlcm5hbWU6\r\n", "+ dXNlcm5hbWU6\n"},
        ParserCase{"ContinuationText", "+ Ready for literal data\r\n",
                   "+ Ready for literal data\n"},

        // Untagged data.
        ParserCase{"Capability", "* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN  LITERAL+\r\n",
                   "capability <IMAP4rev1> <SASL-IR> <AUTH=PLAIN> <LITERAL+>\n"},
        ParserCase{"CapabilityEmpty", "* capability\r\n", "capability\n"},
        ParserCase{"SelectOutput",
                   "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
                   "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] "
                   "Flags permitted.\r\n"
                   "* 23 EXISTS\r\n"
                   "* 3 RECENT\r\n"
                   "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
                   "* OK [UIDNEXT 4392] Predicted next UID\r\n"
                   "* OK [HIGHESTMODSEQ 715194045007] Highest\r\n"
                   "a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
                   "other * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\n"
                   "status * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft "
                   "\\*)] Flags permitted.\n"
                   "exists 23\n"
                   "other * 3 RECENT\n"
                   "status * OK [UIDVALIDITY 3857529045] UIDs valid\n"
                   "status * OK [UIDNEXT 4392] Predicted next UID\n"
                   "status * OK [HIGHESTMODSEQ 715194045007] Highest\n"
                   "status a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\n"},
        ParserCase{"Expunge", "* 5 EXPUNGE\r\n* 0 exists\r\n", "expunge 5\nexists 0\n"},
        ParserCase{"OtherUntagged",
                   "* LIST (\\HasNoChildren) \"/\" INBOX\r\n* ID (\"name\" \"Dovecot\")\r\n"
                   "* ENABLED\r\n* SEARCH 2 3\r\n* 4 XUNKNOWN\r\n",
                   "other * LIST (\\HasNoChildren) \"/\" INBOX\nother * ID (\"name\" "
                   "\"Dovecot\")\nother * ENABLED\nother * SEARCH 2 3\nother * 4 XUNKNOWN\n"},
        ParserCase{"OtherUntaggedWithLiterals",
                   "* LIST () \"/\" {7}\r\nfoo bar\r\n* STATUS {3}\r\nx\r\n (MESSAGES {0}\r\n)\r\n"
                   "a1 OK\r\n",
                   "other * LIST () \"/\" {7}\nother * STATUS {3}\nstatus a1 OK [] \n"},

        // FETCH.
        ParserCase{"SnapshotFetch",
                   "* 1 FETCH (UID 4 RFC822.SIZE 1250)\r\n"
                   "* 2 FETCH (UID 7 RFC822.SIZE 88)\r\n"
                   "* 3 FETCH (RFC822.SIZE 4294967296 UID 4294967295)\r\n"
                   "a3 OK Fetch completed (0.001 + 0.000 secs).\r\n",
                   "fetch 1\nuid 4\nsize 1250\nend fetch\n"
                   "fetch 2\nuid 7\nsize 88\nend fetch\n"
                   "fetch 3\nsize 4294967296\nuid 4294967295\nend fetch\n"
                   "status a3 OK [] Fetch completed (0.001 + 0.000 secs).\n"},
        ParserCase{"BodyLiteralWithTrickyContent",
                   "* 2 FETCH (UID 7 BODY[] {25}\r\nSubject: x\r\n\r\n.\r\n)\r\n{5}\r\n)\r\n"
                   "a4 OK done\r\n",
                   "fetch 2\nuid 7\nbody []<0> 25\n"
                   "data Subject: x\\r\\n\\r\\n.\\r\\n)\\r\\n{5}\\r\\n\nend body\nend fetch\n"
                   "status a4 OK [] done\n"},
        ParserCase{"UidAfterBody", "* 2 FETCH (BODY[] {3}\r\nabc UID 9)\r\n",
                   "fetch 2\nbody []<0> 3\ndata abc\nend body\nuid 9\nend fetch\n"},
        ParserCase{"ZeroLengthLiteral", "* 1 FETCH (UID 1 BODY[] {0}\r\n)\r\n",
                   "fetch 1\nuid 1\nbody []<0> 0\nend body\nend fetch\n"},
        ParserCase{"BodyHeader", "* 1 FETCH (UID 3 BODY[HEADER] {12}\r\nA: b\r\nC: d\r\n)\r\n",
                   "fetch 1\nuid 3\nbody [HEADER]<0> 12\ndata A: b\\r\\nC: d\\r\\n\nend body\n"
                   "end fetch\n"},
        ParserCase{"BodyTextPartial",
                   "* 1 FETCH (UID 3 BODY[TEXT]<0> {4}\r\nline)\r\n"
                   "* 1 FETCH (UID 3 BODY[TEXT]<4096> {2}\r\nab)\r\n",
                   "fetch 1\nuid 3\nbody [TEXT]<0> 4\ndata line\nend body\nend fetch\n"
                   "fetch 1\nuid 3\nbody [TEXT]<4096> 2\ndata ab\nend body\nend fetch\n"},
        ParserCase{"HeaderFieldsSection",
                   "* 1 FETCH (BODY[HEADER.FIELDS (FROM TO)] {2}\r\n\r\n)\r\n",
                   "fetch 1\nbody [HEADER.FIELDS (FROM TO)]<0> 2\ndata \\r\\n\nend body\n"
                   "end fetch\n"},
        ParserCase{"QuotedBody", "* 1 FETCH (BODY[] \"hi \\\"there\\\" \\\\o/\" UID 2)\r\n",
                   "fetch 1\nbody []<0> 14\ndata hi \"there\" \\o/\nend body\nuid 2\n"
                   "end fetch\n"},
        ParserCase{"EmptyQuotedBody", "* 1 FETCH (BODY[TEXT] \"\")\r\n",
                   "fetch 1\nbody [TEXT]<0> 0\nend body\nend fetch\n"},
        ParserCase{"NilBody", "* 1 FETCH (UID 2 BODY[] NIL)\r\n",
                   "fetch 1\nuid 2\nbody []<0> 0\nend body\nend fetch\n"},
        ParserCase{"Rfc822Names",
                   "* 1 FETCH (RFC822 {1}\r\nx RFC822.HEADER nil RFC822.TEXT \"t\")\r\n",
                   "fetch 1\nbody []<0> 1\ndata x\nend body\nbody [HEADER]<0> 0\nend body\n"
                   "body [TEXT]<0> 1\ndata t\nend body\nend fetch\n"},
        // Names are matched in any case; a name of the same length as one we model but
        // another spelling is skipped, whatever its value.
        ParserCase{"ItemNamesInAnyCase",
                   "* 1 fetch (uid 5 Rfc822.Size 10 flags (\\Seen) x-Guid g1 emailId (M2) "
                   "rfc822.text NIL Body.Peek[] NIL)\r\n",
                   "fetch 1\nuid 5\nsize 10\nflags \\Seen\nguid g1\nguid M2\nbody [TEXT]<0> 0\n"
                   "end body\nbody []<0> 0\nend body\nend fetch\n"},
        ParserCase{"NearMissItemNames",
                   "* 2 FETCH (UIE 5 RFC822.SIZF 7 FLAGZ (1) X-GUIE g EMAILIE (x) RFC823 NIL "
                   "RFC822.TEXX \"t\" RFC822.HEADEX NIL UID 6)\r\n",
                   "fetch 2\nuid 6\nend fetch\n"},
        ParserCase{"HeaderAndTextBodies",
                   "* 1 FETCH (BODY[HEADER] {3}\r\nh\r\n BODY[TEXT] {2}\r\nt\n UID 5)\r\n",
                   "fetch 1\nbody [HEADER]<0> 3\ndata h\\r\\n\nend body\nbody [TEXT]<0> 2\n"
                   "data t\\n\nend body\nuid 5\nend fetch\n"},
        ParserCase{"SkippedItems",
                   "* 1 FETCH (FLAGS (\\Seen $Forwarded) INTERNALDATE \"17-Jul-1996 02:44:25 "
                   "-0700\" MODSEQ (12345) X-GM-MSGID 1278455344230334865 EMAILID "
                   "(M6d99ac3275bb4e) THREADID NIL UID 8 RFC822.SIZE 44)\r\n",
                   "fetch 1\nflags \\Seen $Forwarded\nguid M6d99ac3275bb4e\nuid 8\nsize 44\n"
                   "end fetch\n"},
        ParserCase{"SkippedEnvelopeWithLiterals",
                   "* 12 FETCH (FLAGS (\\Seen) ENVELOPE (\"Wed, 17 Jul 1996\" {11}\r\n"
                   "Subj (\"x\"){ ((\"Terry\" NIL \"gray\" \"cac.washington.edu\")) "
                   "(({3}\r\n)(\" NIL \"a\" \"b\")) NIL NIL NIL \"<B27397-0100000@cac>\") "
                   "UID 4 BODY[] {4}\r\nbody)\r\n",
                   "fetch 12\nflags \\Seen\nuid 4\nbody []<0> 4\ndata body\nend body\n"
                   "end fetch\n"},
        ParserCase{"SkippedBodystructure",
                   "* 3 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
                   "NIL \"7bit\" 3 1 NIL NIL NIL NIL)(\"text\" \"html\" NIL NIL NIL \"7bit\" 5 1 "
                   "NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"b\") NIL NIL NIL) BODY "
                   "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1) UID 6)\r\n",
                   "fetch 3\nuid 6\nend fetch\n"},
        ParserCase{"SkippedTopLevelLiteral", "* 3 FETCH (X-DATA {4}\r\n)(\"{ UID 6)\r\n",
                   "fetch 3\nuid 6\nend fetch\n"},
        ParserCase{"BinarySkipped", "* 3 FETCH (BINARY[] ~{3}\r\n\0\1\2 UID 6)\r\n"s,
                   "fetch 3\nuid 6\nend fetch\n"},
        ParserCase{"UnsolicitedFlags", "* 4 FETCH (FLAGS (\\Seen))\r\n",
                   "fetch 4\nflags \\Seen\nend fetch\n"},
        ParserCase{"LenientSpacing", "* 4 FETCH  ( UID 1  RFC822.SIZE 2 ) \r\n",
                   "fetch 4\nuid 1\nsize 2\nend fetch\n"},
        ParserCase{"EmptyFetchList", "* 4 FETCH ()\r\n", "fetch 4\nend fetch\n"},
        ParserCase{"LfOnlyLiteral", "* 1 FETCH (BODY[] {2}\nab)\n",
                   "fetch 1\nbody []<0> 2\ndata ab\nend body\nend fetch\n"},

        // Errors.
        ParserCase{"Garbage", "(hello)\r\n",
                   "error: response line does not start with a tag, \"*\" or \"+\"\n"},
        ParserCase{"LeadingSpace", " a1 OK\r\n",
                   "error: response line does not start with a tag, \"*\" or \"+\"\n"},
        ParserCase{"TagOnly", "a1\r\n", "error: malformed tagged response\n"},
        ParserCase{"TaggedNotStatus", "a1 FETCH done\r\n", "error: malformed tagged response\n"},
        ParserCase{"TaggedBye", "a1 BYE done\r\n", "error: malformed tagged response\n"},
        ParserCase{"StarWithoutSpace", "*OK\r\n", "error: malformed untagged response\n"},
        ParserCase{"EmptyLine", "\r\n", "error: empty response line\n"},
        ParserCase{"ErrorStopsParsing", "a1 OK\r\n\r\na2 OK\r\n",
                   "status a1 OK [] \nerror: empty response line\n"},
        ParserCase{"HugeMessageNumber", "* 4294967296 EXISTS\r\n",
                   "error: malformed message number\n"},
        ParserCase{"FetchFlagsAndGuid",
                   "* 3 FETCH (UID 7 RFC822.SIZE 10 FLAGS (\\Seen $PopbridgePending) X-GUID "
                   "6c0b7a1b1e5f4d6573020000a8a8e2ab)\r\n",
                   "fetch 3\nuid 7\nsize 10\nflags \\Seen $PopbridgePending\n"
                   "guid 6c0b7a1b1e5f4d6573020000a8a8e2ab\nend fetch\n"},
        ParserCase{"FetchQuotedGuidEmptyFlags",
                   "* 1 FETCH (FLAGS () X-GUID \"1700000001.M2P2.host,S=33\")\r\n",
                   "fetch 1\nflags \nguid 1700000001.M2P2.host,S=33\nend fetch\n"},
        ParserCase{"FetchEmailId", "* 1 FETCH (EMAILID (M6d99ac3275bb4e) UID 4)\r\n",
                   "fetch 1\nguid M6d99ac3275bb4e\nuid 4\nend fetch\n"},
        ParserCase{"FetchEmailIdUnclosed", "* 1 FETCH (EMAILID (M6d99 UID 4)\r\n",
                   "fetch 1\nerror: malformed FETCH: bad message GUID\n"},
        ParserCase{"FetchFlagsUnclosed", "* 1 FETCH (FLAGS (\\Seen\r\n",
                   "fetch 1\nerror: malformed FETCH: bad FLAGS\n"},
        ParserCase{"FetchMissingParen", "* 1 FETCH (UID 5\r\n",
                   "fetch 1\nuid 5\nerror: malformed FETCH: missing \")\"\n"},
        ParserCase{"FetchMissingOpen", "* 1 FETCH UID 5)\r\n",
                   "fetch 1\nerror: malformed FETCH: expected \"(\"\n"},
        ParserCase{"FetchMissingParenAfterBody", "* 1 FETCH (BODY[] {2}\r\nab\r\n",
                   "fetch 1\nbody []<0> 2\ndata ab\nend body\n"
                   "error: malformed FETCH: missing \")\"\n"},
        ParserCase{"FetchJunkAfterBody", "* 1 FETCH (BODY[] {2}\r\nabX)\r\n",
                   "fetch 1\nbody []<0> 2\ndata ab\nend body\n"
                   "error: malformed FETCH: expected SP or \")\" after an item\n"},
        ParserCase{"FetchDataAfterClose", "* 1 FETCH (UID 5) x\r\n",
                   "fetch 1\nuid 5\nerror: malformed FETCH: data after \")\"\n"},
        ParserCase{"FetchBadUid", "* 1 FETCH (UID x5)\r\n",
                   "fetch 1\nerror: malformed FETCH: bad UID\n"},
        ParserCase{"FetchUidTooBig", "* 1 FETCH (UID 4294967296)\r\n",
                   "fetch 1\nerror: malformed FETCH: bad UID\n"},
        ParserCase{"FetchItemWithoutValue", "* 1 FETCH (FLAGS)\r\n",
                   "fetch 1\nerror: malformed FETCH: item without a value\n"},
        ParserCase{"FetchUnbalancedSkip", "* 1 FETCH (FLAGS (\\Seen)\r\n",
                   "fetch 1\nflags \\Seen\nerror: malformed FETCH: missing \")\"\n"},
        ParserCase{"FetchUnterminatedQuote", "* 1 FETCH (BODY[] \"abc)\r\n",
                   "fetch 1\nerror: malformed FETCH: unterminated quoted string\n"},
        ParserCase{"FetchBadBodyValue", "* 1 FETCH (BODY[] (a))\r\n",
                   "fetch 1\nerror: malformed FETCH: bad body value\n"},
        ParserCase{"FetchBodyWithoutValue", "* 1 FETCH (BODY[] )\r\n",
                   "fetch 1\nerror: malformed FETCH: bad body value\n"},
        ParserCase{"FetchLiteralAsItemName", "* 1 FETCH ({3}\r\nUID 1)\r\n",
                   "fetch 1\nerror: malformed FETCH: literal in place of an item name\n"},
        ParserCase{"FetchLiteralAsUid", "* 1 FETCH (UID {1}\r\n1)\r\n",
                   "fetch 1\nerror: malformed FETCH: bad UID\n"},
        ParserCase{"BadLiteralEmpty", "* 1 FETCH (BODY[] {}\r\n)\r\n",
                   "fetch 1\nerror: bad literal syntax\n"},
        ParserCase{"BadLiteralSign", "* LIST () \"/\" {+5}\r\nINBOX\r\n",
                   "error: bad literal syntax\n"},
        ParserCase{"BadLiteralOverflow", "* 1 FETCH (BODY[] {18446744073709551616}\r\n",
                   "fetch 1\nerror: bad literal syntax\n"},
        ParserCase{"BadLiteralLetters", "* 1 FETCH (BODY[] {5x}\r\nhello)\r\n",
                   "fetch 1\nerror: malformed FETCH: bad body value\n"},
        ParserCase{"LiteralInMidLine", "* 1 FETCH (FLAGS ({3} a))\r\n",
                   "fetch 1\nerror: bad literal syntax\n"},
        ParserCase{"LineAtLimit", "a1 OK 890123456789012\r\n", "status a1 OK [] 890123456789012\n",
                   21},
        ParserCase{"LineAtLimitBareLf", "a1 OK 890123456789012\n",
                   "status a1 OK [] 890123456789012\n", 21},
        ParserCase{"LineOverLimit", "a1 OK 8901234567890123\r\n", "error: response line too long\n",
                   21},
        ParserCase{"LineFarOverLimit", "a1 OK 8901234567890123456789\r\na2 OK\r\n",
                   "error: response line too long\n", 21},
        ParserCase{"SkippedLiteralsCountTowardTheLimit",
                   "* 1 FETCH (X {8}\r\n12345678 Y {8}\r\n12345678)\r\n",
                   "fetch 1\nerror: response line too long\n", 32},
        ParserCase{"BodyLiteralsDoNotCount",
                   "* 1 FETCH (BODY[] {40}\r\n1234567890123456789012345678901234567890)\r\n",
                   "fetch 1\nbody []<0> 40\ndata 1234567890123456789012345678901234567890\n"
                   "end body\nend fetch\n",
                   32}),
    [](const testing::TestParamInfo<ParserCase>& info) { return std::string(info.param.name); });

TEST(ImapParserLargeLiteral, StreamsInFewChunks) {
  constexpr std::size_t kSize = 5 * 1024 * 1024;
  constexpr std::size_t kPiece = 64 * 1024;
  std::string input = "* 1 FETCH (UID 77 BODY[] {" + std::to_string(kSize) + "}\r\n";
  const std::size_t header = input.size();
  for (std::size_t i = 0; i < kSize; ++i) {
    input.push_back(static_cast<char>('a' + i % 26));
  }
  input += ")\r\na5 OK done\r\n";

  class Counter : public Recorder {
   public:
    void on_body_data(std::string_view chunk) override {
      EXPECT_TRUE(chunk.data() >= piece.data() &&
                  chunk.data() + chunk.size() <= piece.data() + piece.size())
          << "chunk is not a view of the fed bytes";
      for (char c : chunk) {
        if (c != static_cast<char>('a' + received % 26)) {
          ++wrong;
        }
        ++received;
      }
      ++chunks;
    }
    std::string_view piece;
    std::size_t received = 0;
    std::size_t wrong = 0;
  } counter;
  ImapParser parser(counter);
  for (std::size_t start = 0; start < input.size(); start += kPiece) {
    counter.piece = std::string_view(input).substr(start, kPiece);
    ASSERT_TRUE(parser.feed(counter.piece));
  }
  EXPECT_EQ(counter.received, kSize);
  EXPECT_EQ(counter.wrong, 0u);
  // One chunk per piece the literal touches.
  EXPECT_LE(counter.chunks, (header + kSize) / kPiece + 2);
  EXPECT_EQ(counter.log(),
            "fetch 1\nuid 77\nbody []<0> 5242880\nend body\nend fetch\nstatus a5 OK [] done\n");
}

// What is still to come of the literal being read: a reader sizes its next read by it.
TEST(ImapParserLargeLiteral, TellsWhatIsLeftOfEachLiteral) {
  Recorder recorder;
  ImapParser parser(recorder);
  EXPECT_EQ(parser.literal_left(), 0u);
  ASSERT_TRUE(parser.feed("* 1 FETCH (UID 7 BODY[] {10}\r\n123"));
  EXPECT_EQ(parser.literal_left(), 7u);
  ASSERT_TRUE(parser.feed("4567890"));
  EXPECT_EQ(parser.literal_left(), 0u) << "the literal is complete";
  ASSERT_TRUE(parser.feed(" X-SKIPPED {6}\r\nab"));
  EXPECT_EQ(parser.literal_left(), 4u) << "a skipped literal counts too";
  ASSERT_TRUE(parser.feed("cdef)\r\n* METADATA INBOX (/v {5}\r\n1"));
  EXPECT_EQ(parser.literal_left(), 4u) << "and a kept one";
  ASSERT_TRUE(parser.feed("2345)\r\n"));
  EXPECT_EQ(parser.literal_left(), 0u);
  ASSERT_TRUE(parser.feed("* 2 FETCH (BODY[] {9}\r\n1234"));
  parser.reset();
  EXPECT_EQ(parser.literal_left(), 0u) << "a reset parser expects nothing";
}

TEST(ImapParserReentrancy, HandlerMayFeedAgain) {
  class Feeder : public Recorder {
   public:
    void on_status(const ImapStatus& status) override {
      Recorder::on_status(status);
      if (status.tag == "a1") {
        // Bytes that arrive while the handler runs are parsed after the current ones.
        EXPECT_TRUE(parser->feed("a3 OK third\r\n"));
      }
    }
    ImapParser* parser = nullptr;
  } feeder;
  ImapParser parser(feeder);
  feeder.parser = &parser;
  EXPECT_TRUE(parser.feed("a1 OK first\r\na2 OK second\r\n"));
  EXPECT_EQ(feeder.log(), "status a1 OK [] first\nstatus a2 OK [] second\nstatus a3 OK [] third\n");
}

// A recorder that resets the parser when it sees a given tagged status or body chunk.
class Resetter : public Recorder {
 public:
  void on_status(const ImapStatus& status) override {
    Recorder::on_status(status);
    if (status.tag == reset_on_tag) {
      parser->reset();
    }
  }
  void on_body_data(std::string_view chunk) override {
    Recorder::on_body_data(chunk);
    if (reset_on_body) {
      parser->reset();
    }
  }
  ImapParser* parser = nullptr;
  std::string reset_on_tag;
  bool reset_on_body = false;
};

TEST(ImapParserReset, DropsTheRestOfTheFeedAfterStartTlsOk) {
  Resetter events;
  ImapParser parser(events);
  events.parser = &parser;
  events.reset_on_tag = "a2";
  // Plaintext injected after the STARTTLS OK, complete and partial, is never parsed.
  EXPECT_TRUE(parser.feed(
      "a2 OK Begin TLS negotiation now\r\n* OK [CAPABILITY AUTH=PLAIN] x\r\n* OK [CAPAB"));
  EXPECT_TRUE(parser.feed("* CAPABILITY IMAP4rev1 AUTH=SCRAM\r\n"));
  EXPECT_EQ(events.log(),
            "status a2 OK [] Begin TLS negotiation now\ncapability <IMAP4rev1> <AUTH=SCRAM>\n");
}

TEST(ImapParserReset, DropsAPartialResponse) {
  Recorder recorder;
  ImapParser parser(recorder);
  EXPECT_TRUE(parser.feed("* 1 FETCH (UID 5 BODY[] {10}\r\nabc"));
  parser.reset();
  EXPECT_TRUE(parser.feed("a1 OK done\r\n"));
  EXPECT_EQ(recorder.log(), "fetch 1\nuid 5\nbody []<0> 10\ndata abc\nstatus a1 OK [] done\n");
}

TEST(ImapParserReset, InsideABodyStopsIt) {
  Resetter events;
  ImapParser parser(events);
  events.parser = &parser;
  events.reset_on_body = true;
  EXPECT_TRUE(parser.feed("* 1 FETCH (BODY[] {3}\r\nabc)\r\na0 OK\r\n"));
  events.reset_on_body = false;
  EXPECT_TRUE(parser.feed("a1 OK\r\n"));
  EXPECT_EQ(events.log(), "fetch 1\nbody []<0> 3\ndata abc\nstatus a1 OK [] \n");
}

TEST(ImapParserReset, ClearsAFailure) {
  Recorder recorder;
  ImapParser parser(recorder);
  EXPECT_FALSE(parser.feed("((\r\n"));
  parser.reset();
  EXPECT_FALSE(parser.failed());
  EXPECT_EQ(parser.error(), "");
  EXPECT_TRUE(parser.feed("+ go\r\n"));
  EXPECT_EQ(recorder.log(), "+ go\n");
}

TEST(ImapParserFailure, StaysFailed) {
  Recorder recorder;
  ImapParser parser(recorder);
  EXPECT_FALSE(parser.feed("!!\r\n"));
  EXPECT_TRUE(parser.failed());
  EXPECT_FALSE(parser.feed("a1 OK\r\n"));
  EXPECT_EQ(recorder.log(), "");
}

TEST(ImapParserFailure, ReportsFromTheFeedThatFails) {
  Recorder recorder;
  ImapParser parser(recorder, 16);
  EXPECT_TRUE(parser.feed("a1 OK 0123456"));
  EXPECT_FALSE(parser.failed());
  EXPECT_FALSE(parser.feed("7890123456789"));
  EXPECT_EQ(parser.error(), "response line too long");
}

}  // namespace
}  // namespace popbridge::protocol
