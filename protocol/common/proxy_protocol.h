// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace popbridge::protocol {

// The PROXY protocol header a load balancer puts in front of a connection (HAProxy's
// spec, versions 1 and 2), so the gateway sees the real client address. Bytes may arrive
// split anywhere; the decoder takes only the header's own bytes and says how many.
class ProxyProtocolDecoder {
 public:
  enum class Status { kNeedMore, kDone, kError };

  struct Header {
    bool local = false;  // v2 LOCAL or v1 UNKNOWN: a health check, no client address
    std::string source_address;
    std::uint16_t source_port = 0;
    std::string destination_address;
    std::uint16_t destination_port = 0;
  };

  // Consumes header bytes from input; consumed says how many (the rest belongs to the
  // protocol after the header). Once kDone or kError, further calls change nothing.
  Status feed(std::string_view input, std::size_t& consumed);
  const Header& header() const { return header_; }
  std::string_view error() const { return error_; }

 private:
  Status parse_v1();
  Status parse_v2();
  Status fail(std::string_view why);

  std::string buffer_;  // at most one header: 107 octets (v1) or 16 + 4096 (v2)
  Status status_ = Status::kNeedMore;
  Header header_;
  std::string error_;
};

}  // namespace popbridge::protocol
