// SPDX-License-Identifier: Apache-2.0
#include "protocol/common/proxy_protocol.h"

#include <gtest/gtest.h>

#include <string>

namespace popbridge::protocol {
namespace {

using Status = ProxyProtocolDecoder::Status;

struct Outcome {
  Status status;
  std::size_t consumed;
  ProxyProtocolDecoder::Header header;
};

// Feeds input in pieces of `step` bytes, stopping at the end of the header.
Outcome decode(std::string_view input, std::size_t step) {
  ProxyProtocolDecoder decoder;
  std::size_t total = 0;
  Status status = Status::kNeedMore;
  while (status == Status::kNeedMore && total < input.size()) {
    std::size_t used = 0;
    status = decoder.feed(input.substr(total, step), used);
    total += used;
  }
  return {status, total, decoder.header()};
}

std::string v2(unsigned char command, unsigned char family, std::string payload) {
  std::string header("\r\n\r\n\0\r\nQUIT\n", 12);
  header.push_back(static_cast<char>(0x20 | command));
  header.push_back(static_cast<char>(family));
  header.push_back(static_cast<char>(payload.size() >> 8));
  header.push_back(static_cast<char>(payload.size() & 0xff));
  return header + payload;
}

TEST(ProxyProtocol, V1Tcp4AtEveryStepSize) {
  const std::string input = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 995\r\n+OK after";
  for (std::size_t step = 1; step <= input.size(); ++step) {
    Outcome out = decode(input, step);
    ASSERT_EQ(out.status, Status::kDone) << step;
    EXPECT_EQ(out.consumed, input.find('+')) << "bytes after the header are not taken";
    EXPECT_EQ(out.header.source_address, "192.0.2.10");
    EXPECT_EQ(out.header.source_port, 56324);
    EXPECT_EQ(out.header.destination_port, 995);
    EXPECT_FALSE(out.header.local);
  }
}

TEST(ProxyProtocol, V1Tcp6AndUnknown) {
  Outcome six = decode("PROXY TCP6 2001:db8::1 2001:db8::2 4000 110\r\n", 7);
  ASSERT_EQ(six.status, Status::kDone);
  EXPECT_EQ(six.header.source_address, "2001:db8::1");
  Outcome unknown = decode("PROXY UNKNOWN\r\n", 3);
  ASSERT_EQ(unknown.status, Status::kDone);
  EXPECT_TRUE(unknown.header.local);
}

TEST(ProxyProtocol, V2Ipv4WithTlvsAtEveryStepSize) {
  std::string payload = {'\xc0', '\x00', '\x02', '\x0a', '\xc6', '\x33',
                         '\x64', '\x01', '\xdc', '\x04', '\x03', '\xe3'};
  payload += std::string("\x04\x00\x03xyz", 6);  // a TLV to be skipped
  const std::string input = v2(1, 0x11, payload) + "TLS";
  for (std::size_t step = 1; step <= input.size(); ++step) {
    Outcome out = decode(input, step);
    ASSERT_EQ(out.status, Status::kDone) << step;
    EXPECT_EQ(out.consumed, input.size() - 3);
    EXPECT_EQ(out.header.source_address, "192.0.2.10");
    EXPECT_EQ(out.header.destination_address, "198.51.100.1");
    EXPECT_EQ(out.header.source_port, 56324);
    EXPECT_EQ(out.header.destination_port, 995);
  }
}

TEST(ProxyProtocol, V2Ipv6AndLocal) {
  std::string payload(36, '\0');
  payload[15] = 1;  // ::1
  payload[31] = 2;  // ::2
  payload[32] = 0x12;
  payload[33] = 0x34;
  Outcome six = decode(v2(1, 0x21, payload), 5);
  ASSERT_EQ(six.status, Status::kDone);
  EXPECT_EQ(six.header.source_address, "::1");
  EXPECT_EQ(six.header.source_port, 0x1234);
  Outcome local = decode(v2(0, 0x00, ""), 1);
  ASSERT_EQ(local.status, Status::kDone);
  EXPECT_TRUE(local.header.local);
}

TEST(ProxyProtocol, MalformedHeadersAreErrors) {
  const std::string cases[] = {
      "USER alice\r\n",                          // no header at all
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",        // LF without CR
      "PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",    // bad address
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",  // bad port
      "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",     // leading zero
      "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",      // family mismatch
      "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",        // missing field
      "PROXY " + std::string(200, 'A'),          // v1 over 107 octets
      v2(1, 0x11, "short"),                      // truncated IPv4 block
      v2(1, 0x31, std::string(16, 'x')),         // unix sockets: refused
      v2(5, 0x11, std::string(12, 'x')),         // unknown command
  };
  for (const std::string& input : cases) {
    EXPECT_EQ(decode(input, 1).status, Status::kError) << input;
    EXPECT_EQ(decode(input, input.size()).status, Status::kError) << input;
  }
}

TEST(ProxyProtocol, OversizedV2IsRefusedBeforeBuffering) {
  std::string header = v2(1, 0x11, "");
  header[14] = '\xff';
  header[15] = '\xff';
  EXPECT_EQ(decode(header, 1).status, Status::kError);
}

}  // namespace
}  // namespace popbridge::protocol
