// SPDX-License-Identifier: Apache-2.0
// How many bytes a read waits for: a large IMAP literal or HTTP body is read in large
// pieces (SO_RCVLOWAT), and a peer too slow for that is found and read as its bytes come.
#include <openssl/ssl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>

#include "proxy/net/connection.h"

namespace popbridge::proxy {
namespace {

// Of the bytes a peer is expected to send, the TLS engine may already hold some between
// reads, in one partial record (neither library reads ahead): at most a record's plaintext,
// 16 KiB. A little more is subtracted, for safety's sake, from what is awaited on the wire.
constexpr std::uint64_t kTlsHeldAtMost = 16 * 1024 + 256;

}  // namespace

void Connection::expect_bytes(std::uint64_t bytes) {
  expected_bytes_ = slow_peer_ ? 0 : bytes;
  if (!handling_read_) {
    apply_read_low_watermark();  // else once the read is handled
  }
}

Connection::Silence Connection::check_silence() {
  const std::size_t queued = unread_socket_bytes();
  const bool record_arriving =
      ssl_ != nullptr && bytes_received_ > std::max(received_when_heard_, received_when_checked_);
  // Bytes queued now are counted when they are read: they were this check's news, and must
  // not be the next check's too (a peer that stops would be found a period later).
  received_when_checked_ = bytes_received_ + queued;
  if (!reading_) {
    return Silence::kSilent;  // not reading: bytes there are not on their way up
  }
  if (queued == 0) {
    return record_arriving ? Silence::kRecordArriving : Silence::kSilent;
  }
  if (queued >= read_low_watermark_) {
    return Silence::kBytesWaiting;  // arrived as the timer expired: the next poll reads them
  }
  if (slow_peer_) {
    return Silence::kSilent;  // the watermark could not be lowered: nothing will read them
  }
  slow_peer_ = true;
  expect_bytes(0);
  return read_low_watermark_ <= queued ? Silence::kSlowPeer : Silence::kSilent;
}

void Connection::apply_read_low_watermark() {
  if (closing() || (expected_bytes_ == 0 && read_low_watermark_ == 1)) {
    return;  // the common case, every read of a client: nothing to change
  }
  // What is still to arrive on the socket: the expected bytes less what the TLS engine
  // may already hold of them.
  std::uint64_t on_the_wire = expected_bytes_;
  if (ssl_ != nullptr) {
    const std::uint64_t held = kTlsHeldAtMost + static_cast<std::uint64_t>(SSL_pending(ssl_));
    on_the_wire = on_the_wire > held ? on_the_wire - held : 0;
  }
  // Two values only, so a large message costs two system calls, not one per read.
  const std::size_t wanted = on_the_wire >= kLargeRead ? kLargeRead : 1;
  if (wanted == read_low_watermark_) {
    return;
  }
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) != 0) {
    return;
  }
  const int value = static_cast<int>(wanted);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &value, sizeof(value)) == 0) {
    read_low_watermark_ = wanted;
  }
}

std::size_t Connection::unread_socket_bytes() {
  uv_os_fd_t fd = -1;
  int queued = 0;
  if (closing() || uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) != 0 ||
      ioctl(fd, FIONREAD, &queued) != 0 || queued < 0) {
    return 0;
  }
  return static_cast<std::size_t>(queued);
}

}  // namespace popbridge::proxy
