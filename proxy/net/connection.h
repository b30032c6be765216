// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <openssl/ssl.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/net/tcp_options.h"
#include "proxy/net/tls_transport.h"

namespace popbridge::proxy {

class Connection;

// Destroying the owner's pointer releases the connection: no more upcalls, the socket
// closes (after a requested graceful flush, if any), and the memory goes once both the
// owner has released it and libuv has called back from uv_close, whichever is last.
struct ConnectionReleaser {
  void operator()(Connection* connection) const noexcept;
};
using ConnectionPtr = std::unique_ptr<Connection, ConnectionReleaser>;

// One TCP connection with optional TLS on top. TLS runs on a TlsTransport: SSL_read reads
// the ciphertext libuv just read, in place, and yields plaintext; SSL_write appends records
// to the output queue, which is flushed with uv_write. Session code sees the same interface for
// plain and TLS, and STLS/STARTTLS turn TLS on in place.
//
// Writes are queued in one buffer; what the socket takes at once goes out with uv_try_write,
// the rest with a single uv_write in flight; pending_bytes() is
// what the peer has not taken yet, which is what backpressure watches. With TLS, what is
// written while a uv_write is in flight stays plaintext until it completes and is then
// sealed in full-size records; decrypted input reaches on_data in chunks of up to 64 KiB,
// however small the peer's records. Writes made while any connection's read is being
// handled are flushed when that handling ends, so one read's replies leave in one write.
//
// Re-entrancy: any upcall may release or close the connection; the connection checks
// for that after every upcall and stops touching its handler.
class Connection {
 public:
  enum class Role { kServer, kClient };

  class Handler {
   public:
    virtual ~Handler() = default;
    // Outbound connect finished: 0 or a libuv error code.
    virtual void on_connected(int status) { (void)status; }
    virtual void on_tls_established() {}
    virtual void on_data(std::string_view bytes) = 0;
    // pending_bytes() fell below the low watermark after having been above it.
    virtual void on_drained() {}
    // The peer closed, or a socket or TLS error happened; the connection is closed.
    virtual void on_disconnected(std::string_view reason) = 0;
  };

  using KeepAlive = TcpKeepAlive;
  // Whether configure_socket() sets nodelay and keep-alive, or the socket already has them
  // from the listener it was accepted on (kAcceptedSocketsInheritTcpOptions).
  enum class TcpOptions : bool { kSet, kInherited };

  static ConnectionPtr create(uv_loop_t* loop, Handler* handler);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // An accepted connection gets its handler once the session that owns it exists.
  void set_handler(Handler* handler) { handler_ = handler; }

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  int connect(const sockaddr* address);
  // Before connect() or configure_socket().
  void set_keepalive(const KeepAlive& keepalive) { keepalive_ = keepalive; }
  // Called after accept or connect: nodelay, keep-alive, and the peer's address.
  void configure_socket(TcpOptions options = TcpOptions::kSet);
  void start_reading();
  void stop_reading();
  bool reading() const { return reading_; }
  // The peer will send at least this many more bytes, none of them handed up yet, without
  // waiting for anything from us (the rest of an IMAP literal or of an HTTP body). When
  // that is a lot, the socket wakes the loop only once kLargeRead bytes are there
  // (SO_RCVLOWAT), so a large message streams in a few large reads instead of one per
  // segment the peer sends: each wake-up costs more CPU than the bytes it brings. 0 wakes
  // on every byte again.
  void expect_bytes(std::uint64_t bytes);
  static constexpr std::size_t kLargeRead = 64 * 1024;

  // For a timer that counts the peer's silence, what the socket holds:
  enum class Silence {
    kSilent,        // nothing: the peer is silent
    kBytesWaiting,  // bytes the loop's next poll reads: not silent
    // Part of a TLS record arrived since the peer was last heard or last checked: coming,
    // slowly. The engine hands up nothing until a record is whole, so nothing re-armed the
    // timer. (A peer that stops there is found by the next check.)
    kRecordArriving,
    // Bytes short of an awaited large read: slow, not silent. From now on this connection
    // hands up bytes as they come (expect_bytes() is ignored).
    kSlowPeer,
  };
  Silence check_silence();
  // Bytes in the socket's receive queue, not read yet.
  std::size_t unread_socket_bytes();

  // Starts TLS in place. For kClient, verify_host (a DNS name or IP literal) is used
  // for SNI and checked against the certificate when the context verifies peers.
  bool start_tls(SSL_CTX* context, Role role, const std::string& verify_host);
  // Handles bytes already read by the owner (e.g. after a PROXY protocol header) as if
  // they had just arrived: ciphertext when TLS is on, else passed to on_data.
  void replay(std::string_view bytes);
  bool tls_active() const { return ssl_ != nullptr; }
  bool tls_established() const { return handshake_done_; }
  // "TLSv1.3 TLS_AES_128_GCM_SHA256", for logs.
  std::string tls_summary() const;

  void write(std::string_view plaintext);
  // The same for output made in place: fill(std::string&) appends plaintext to the queue
  // itself, which saves the copy from a scratch buffer that write() would cost.
  template <typename Fill>
  void write_in_place(Fill&& fill) {
    if (closing()) {
      return;
    }
    fill(ssl_ == nullptr ? out_ : staged_plaintext_);
    after_write();
  }
  std::size_t pending_bytes() const {
    return staged_plaintext_.size() + out_.size() + inflight_.size();
  }
  void set_low_watermark(std::size_t bytes) { low_watermark_ = bytes; }
  void set_high_watermark(std::size_t bytes) { high_watermark_ = bytes; }
  bool above_high_watermark() const { return pending_bytes() >= high_watermark_; }
  // While a message is being relayed, the buffers keep their capacity between writes: each
  // regrowth would copy what is queued again. Otherwise they are given back whenever
  // everything was sent, so an idle connection holds no buffer.
  void set_streaming(bool streaming);

  // Sends what is queued (and a TLS close_notify), then shuts down and closes.
  void close_after_flush();
  // Closes now; queued data is dropped.
  void close();
  bool closing() const { return closing_ || close_requested_; }

  const std::string& peer_address() const { return peer_address_; }
  std::uint16_t peer_port() const { return peer_port_; }
  std::uint64_t bytes_received() const { return bytes_received_; }
  std::uint64_t bytes_sent() const { return bytes_sent_; }

 private:
  KeepAlive keepalive_;
  friend struct ConnectionReleaser;
  Connection(uv_loop_t* loop, Handler* handler);
  ~Connection();
  void release() noexcept;

  struct ReadScope;
  static void on_alloc(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf) noexcept;
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void on_write_done(uv_write_t* request, int status) noexcept;
  static void on_connect_done(uv_connect_t* request, int status) noexcept;
  static void on_shutdown_done(uv_shutdown_t* request, int status) noexcept;
  static void on_closed(uv_handle_t* handle) noexcept;

  void handle_ciphertext(std::string_view bytes);
  void decrypt_available();
  void pump_tls_reads();
  void write_tls(std::string_view plaintext);
  void seal_staged_plaintext();
  void after_write();
  void release_spare_capacity();
  void flush();
  // uv_try_write of the whole queue; true when all of it went.
  bool write_at_once();
  void maybe_finish_graceful_close();
  void apply_read_low_watermark();
  void fail(std::string_view reason);
  bool handler_gone() const { return handler_ == nullptr || closing_; }

  uv_tcp_t tcp_{};
  uv_write_t write_request_{};
  uv_connect_t connect_request_{};
  uv_shutdown_t shutdown_request_{};
  Handler* handler_;

  SSL* ssl_ = nullptr;
  TlsTransport transport_{{}, &out_};
  bool handshake_done_ = false;
  // Plaintext not sealed yet: written before the handshake finished, or while a write was
  // in flight.
  std::string staged_plaintext_;

  std::string out_;       // queued, not yet handed to libuv
  std::string inflight_;  // owned by the one uv_write in flight
  bool writing_ = false;
  std::size_t high_watermark_ = 256 * 1024;
  std::size_t low_watermark_ = 64 * 1024;
  bool was_above_high_ = false;
  bool streaming_ = false;
  bool flush_pending_ = false;  // queued to be flushed when the current read is handled

  bool reading_ = false;
  std::uint64_t expected_bytes_ = 0;    // see expect_bytes()
  std::size_t read_low_watermark_ = 1;  // SO_RCVLOWAT as set on the socket
  bool slow_peer_ = false;              // see check_silence()
  bool handling_read_ = false;          // inside this connection's on_read
  // bytes_received_ when plaintext was last handed up (or the TLS handshake ended), and
  // when check_silence() last ran plus the bytes then queued in the socket (counted once
  // read): see Silence::kRecordArriving.
  std::uint64_t received_when_heard_ = 0;
  std::uint64_t received_when_checked_ = 0;
  bool close_requested_ = false;  // graceful close pending
  bool shutdown_started_ = false;
  bool closing_ = false;        // uv_close called
  bool handle_closed_ = false;  // libuv called back: the handle memory is unused
  bool released_ = false;       // the owner dropped its pointer
  std::string peer_address_;
  std::uint16_t peer_port_ = 0;
  std::string tls_session_key_;  // a client's: where TlsSessionCache keeps its sessions
  std::uint64_t bytes_received_ = 0;
  std::uint64_t bytes_sent_ = 0;
};

}  // namespace popbridge::proxy
