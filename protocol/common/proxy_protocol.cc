// SPDX-License-Identifier: Apache-2.0
#include "protocol/common/proxy_protocol.h"

#include <arpa/inet.h>

#include <array>
#include <charconv>
#include <cstring>
#include <vector>

namespace popbridge::protocol {
namespace {

constexpr std::string_view kV2Signature("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr std::size_t kV1MaxLength = 107;  // the spec's worst case, CRLF included
constexpr std::size_t kV2HeaderLength = 16;
// Addresses plus TLVs; real balancers send far less, and we hold no more than this.
constexpr std::size_t kV2MaxPayload = 4096;

bool parse_port(std::string_view text, std::uint16_t& port) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) {
    return false;
  }
  unsigned value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value > 65535) {
    return false;
  }
  port = static_cast<std::uint16_t>(value);
  return true;
}

bool valid_address(int family, std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) {
    return false;
  }
  char copy[INET6_ADDRSTRLEN] = {};
  std::memcpy(copy, text.data(), text.size());
  std::array<unsigned char, sizeof(in6_addr)> out{};
  return inet_pton(family, copy, out.data()) == 1;
}

std::string address_text(int family, const unsigned char* bytes) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(family, bytes, text, sizeof(text));
  return text;
}

std::vector<std::string_view> split_spaces(std::string_view line) {
  std::vector<std::string_view> parts;
  while (!line.empty()) {
    const std::size_t end = line.find(' ');
    parts.push_back(line.substr(0, end));
    if (end == std::string_view::npos) {
      break;
    }
    line.remove_prefix(end + 1);
  }
  return parts;
}

}  // namespace

ProxyProtocolDecoder::Status ProxyProtocolDecoder::fail(std::string_view why) {
  status_ = Status::kError;
  error_ = std::string(why);
  return status_;
}

ProxyProtocolDecoder::Status ProxyProtocolDecoder::feed(std::string_view input,
                                                        std::size_t& consumed) {
  consumed = 0;
  while (status_ == Status::kNeedMore && consumed < input.size()) {
    buffer_.push_back(input[consumed++]);
    // Decide the version as soon as the first bytes tell it apart.
    const bool maybe_v2 = kV2Signature.substr(0, std::min(buffer_.size(), kV2Signature.size())) ==
                          std::string_view(buffer_).substr(0, kV2Signature.size());
    const bool maybe_v1 =
        std::string_view("PROXY ").substr(0, std::min<std::size_t>(buffer_.size(), 6)) ==
        std::string_view(buffer_).substr(0, 6);
    if (!maybe_v1 && !maybe_v2) {
      return fail("not a PROXY protocol header");
    }
    if (maybe_v2 && buffer_.size() >= kV2HeaderLength) {
      parse_v2();
    } else if (maybe_v1 && buffer_.back() == '\n') {
      parse_v1();
    } else if (maybe_v1 && buffer_.size() >= kV1MaxLength) {
      return fail("PROXY v1 header too long");
    }
  }
  return status_;
}

ProxyProtocolDecoder::Status ProxyProtocolDecoder::parse_v1() {
  std::string_view line = buffer_;
  if (line.size() < 2 || line[line.size() - 2] != '\r') {
    return fail("PROXY v1 header must end with CRLF");
  }
  line.remove_suffix(2);
  const std::vector<std::string_view> parts = split_spaces(line);
  if (parts.size() >= 2 && parts[1] == "UNKNOWN") {
    header_.local = true;
    status_ = Status::kDone;
    return status_;
  }
  if (parts.size() != 6 || (parts[1] != "TCP4" && parts[1] != "TCP6")) {
    return fail("malformed PROXY v1 header");
  }
  const int family = parts[1] == "TCP4" ? AF_INET : AF_INET6;
  if (!valid_address(family, parts[2]) || !valid_address(family, parts[3]) ||
      !parse_port(parts[4], header_.source_port) ||
      !parse_port(parts[5], header_.destination_port)) {
    return fail("malformed address in PROXY v1 header");
  }
  header_.source_address = std::string(parts[2]);
  header_.destination_address = std::string(parts[3]);
  status_ = Status::kDone;
  return status_;
}

ProxyProtocolDecoder::Status ProxyProtocolDecoder::parse_v2() {
  const auto* bytes = reinterpret_cast<const unsigned char*>(buffer_.data());
  const std::size_t payload = (static_cast<std::size_t>(bytes[14]) << 8) | bytes[15];
  if ((bytes[12] & 0xF0) != 0x20) {
    return fail("unsupported PROXY protocol version");
  }
  if (payload > kV2MaxPayload) {
    return fail("PROXY v2 header too long");
  }
  if (buffer_.size() < kV2HeaderLength + payload) {
    return Status::kNeedMore;
  }
  const unsigned command = bytes[12] & 0x0F;
  const unsigned family = bytes[13];
  const unsigned char* address = bytes + kV2HeaderLength;
  if (command == 0x0) {
    header_.local = true;  // LOCAL: the balancer's own health check
  } else if (command != 0x1) {
    return fail("unknown PROXY v2 command");
  } else if (family == 0x11) {  // TCP over IPv4
    if (payload < 12) {
      return fail("PROXY v2 IPv4 addresses truncated");
    }
    header_.source_address = address_text(AF_INET, address);
    header_.destination_address = address_text(AF_INET, address + 4);
    header_.source_port = static_cast<std::uint16_t>((address[8] << 8) | address[9]);
    header_.destination_port = static_cast<std::uint16_t>((address[10] << 8) | address[11]);
  } else if (family == 0x21) {  // TCP over IPv6
    if (payload < 36) {
      return fail("PROXY v2 IPv6 addresses truncated");
    }
    header_.source_address = address_text(AF_INET6, address);
    header_.destination_address = address_text(AF_INET6, address + 16);
    header_.source_port = static_cast<std::uint16_t>((address[32] << 8) | address[33]);
    header_.destination_port = static_cast<std::uint16_t>((address[34] << 8) | address[35]);
  } else if (family == 0x00) {
    header_.local = true;  // UNSPEC: no usable address
  } else {
    return fail("unsupported PROXY v2 address family");
  }
  status_ = Status::kDone;
  return status_;
}

}  // namespace popbridge::protocol
