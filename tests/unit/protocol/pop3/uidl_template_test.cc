// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/uidl_template.h"

#include <gtest/gtest.h>

#include <string>

namespace popbridge::protocol {
namespace {

std::string render(std::string_view text, UidlFields fields) {
  std::string error;
  std::optional<UidlTemplate> parsed = UidlTemplate::parse(text, &error);
  EXPECT_TRUE(parsed.has_value()) << text << ": " << error;
  return parsed ? parsed->render(fields) : std::string();
}

std::string error_of(std::string_view text) {
  std::string error;
  EXPECT_FALSE(UidlTemplate::parse(text, &error).has_value()) << text;
  return error;
}

// Expected values were printed by Dovecot 2.3.19's own pop3 (pop3_uidl_format) for a
// message with UID 1 in a mailbox with UIDVALIDITY 1796406082 (0x6b12d686 + ...), or
// follow its var_expand source line by line where noted.
constexpr UidlFields kOne{1, 0x6b12d686, "", ""};

TEST(UidlTemplate, DovecotDefaultIsLowerCaseHex) {
  EXPECT_EQ(render(UidlTemplate::kDovecot, kOne), "000000016b12d686");
  EXPECT_EQ(render(UidlTemplate::kDovecot, {0xABCDEF12, 0xFFFFFFFF, "", ""}), "abcdef12ffffffff");
}

TEST(UidlTemplate, Dovecot24DefaultPrintsTheSame) {
  EXPECT_EQ(render("%{uid | hex(8)}%{uidvalidity | hex(8)}", kOne), "000000016b12d686");
  // 2.4's hex(N) keeps the last N digits of a longer value.
  EXPECT_EQ(render("%{uidvalidity | hex(4)}", kOne), "d686");
}

TEST(UidlTemplate, UidPreset) { EXPECT_EQ(render(UidlTemplate::kUid, {30, 42, "", ""}), "42.30"); }

TEST(UidlTemplate, WidthOffsetAndPadding) {
  const UidlFields fields{7, 1796406082, "", ""};
  EXPECT_EQ(render("%2.3v", fields), "964");  // offset 2, width 3
  EXPECT_EQ(render("%-2.v", fields), "82");   // the last two
  EXPECT_EQ(render("%08v", fields), "1796406082") << "zero padding never truncates";
  EXPECT_EQ(render("%3Xv", fields), "6b1");  // a width without 0 truncates
  EXPECT_EQ(render("%-3v", fields), "179") << "a sign without '.' is ignored";
  EXPECT_EQ(render("%.-2v", fields), "17964060") << "a negative width drops from the end";
  EXPECT_EQ(render("%05.2v", fields), "06") << "the 0 before '.' does not pad";
  EXPECT_EQ(render("%04u", fields), "0007");
}

TEST(UidlTemplate, Modifiers) {
  const UidlFields fields{255, 1, "AbC ", ""};
  EXPECT_EQ(render("%Xu", fields), "ff");
  EXPECT_EQ(render("%MXu", fields), "0") << "modifiers run left to right: X of an MD5 is 0";
  EXPECT_EQ(render("%XUu", fields), "FF");
  EXPECT_EQ(render("%Lg", fields), "abc ");
  EXPECT_EQ(render("%Tg", fields), "AbC");
  EXPECT_EQ(render("%Ru", fields), "552");
  EXPECT_EQ(render("%Mu", fields), md5_hex("255"));
  EXPECT_EQ(render("%Xg", fields), "0") << "X of a non-number is 0";
}

TEST(UidlTemplate, LiteralsPercentAndLongNames) {
  EXPECT_EQ(render("pop-%u.%v%%", {5, 6, "", ""}), "pop-5.6%");
  EXPECT_EQ(render("%{uidvalidity}.%{uid}", {5, 6, "", ""}), "6.5");
  EXPECT_EQ(render("%g", {5, 6, "1700000001.M2P2.host,S=33", ""}), "1700000001.M2P2.host,S=33");
}

TEST(UidlTemplate, WhatItNeeds) {
  EXPECT_FALSE(UidlTemplate::parse("%u", nullptr)->needs_guid());
  EXPECT_TRUE(UidlTemplate::parse("%u-%g", nullptr)->needs_guid());
  EXPECT_TRUE(UidlTemplate::parse("%m", nullptr)->needs_md5());
  EXPECT_TRUE(UidlTemplate::parse(UidlTemplate::kDovecot, nullptr)->unique_per_uid());
  EXPECT_TRUE(UidlTemplate::parse(UidlTemplate::kUid, nullptr)->unique_per_uid());
  EXPECT_FALSE(UidlTemplate::parse("%v", nullptr)->unique_per_uid());
  EXPECT_FALSE(UidlTemplate::parse("%2u", nullptr)->unique_per_uid());
  EXPECT_FALSE(UidlTemplate::parse("%u%g", nullptr)->unique_per_uid());
  EXPECT_FALSE(UidlTemplate::parse("%{uid | hex(4)}", nullptr)->unique_per_uid());
}

TEST(UidlTemplate, Errors) {
  EXPECT_EQ(error_of(""), "empty template");
  EXPECT_EQ(error_of("abc%"), "'%' at the end without a variable");
  EXPECT_EQ(error_of("%z"),
            "unknown variable 'z' (known: u, v, g, m, {uid}, {uidvalidity}, {guid}, {md5})");
  EXPECT_NE(error_of("%f").find("not visible over IMAP"), std::string::npos);
  EXPECT_NE(error_of("%Hu").find("modifier 'H' is not supported"), std::string::npos);
  EXPECT_EQ(error_of("%{uid"), "unterminated '%{'");
  EXPECT_NE(error_of("%{uid | base64}").find("unsupported filter"), std::string::npos);
  EXPECT_NE(error_of("%99999u").find("width too large"), std::string::npos);
}

TEST(Uidl, ValidityFollowsRfc1939) {
  EXPECT_TRUE(valid_uidl("a"));
  EXPECT_TRUE(valid_uidl(std::string(70, '~')));
  EXPECT_FALSE(valid_uidl(""));
  EXPECT_FALSE(valid_uidl(std::string(71, 'a')));
  EXPECT_FALSE(valid_uidl("a b"));
  EXPECT_FALSE(valid_uidl("a\x7f"));
  EXPECT_EQ(sanitize_uidl("ok"), "ok");
  EXPECT_EQ(sanitize_uidl("not ok"), md5_hex("not ok"));
  EXPECT_EQ(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
}

}  // namespace
}  // namespace popbridge::protocol
