// SPDX-License-Identifier: Apache-2.0
#include "proxy/net/connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <array>
#include <cstring>
#include <vector>

#include "proxy/net/tls_context.h"
#include "proxy/net/tls_session_cache.h"
#include "proxy/net/tls_transport.h"

namespace popbridge::proxy {
namespace {

// One read buffer per thread: reads are handled synchronously inside the read callback,
// so idle connections cost no read buffer at all.
constexpr std::size_t kReadBufferSize = 64 * 1024;
thread_local std::array<char, kReadBufferSize> t_read_buffer;
thread_local std::array<char, kReadBufferSize> t_plaintext_buffer;

// Writes made while a read is being handled are sent when the handling ends, together:
// a small RETR's status line, body and terminator, which arrive in one upstream read, go
// out in one write (and one TLS record) instead of two or three. Connections are freed
// only from their close callbacks, which never run inside a read callback, so the
// pointers stay valid until then.
thread_local int t_reads_in_progress = 0;
thread_local std::vector<Connection*> t_flush_after_read;

bool is_ip_literal(const std::string& host) {
  in6_addr v6;
  in_addr v4;
  return uv_inet_pton(AF_INET, host.c_str(), &v4) == 0 ||
         uv_inet_pton(AF_INET6, host.c_str(), &v6) == 0;
}

}  // namespace

void ConnectionReleaser::operator()(Connection* connection) const noexcept {
  connection->release();
}

ConnectionPtr Connection::create(uv_loop_t* loop, Handler* handler) {
  return ConnectionPtr(new Connection(loop, handler));
}

Connection::Connection(uv_loop_t* loop, Handler* handler) : handler_(handler) {
  uv_tcp_init(loop, &tcp_);
  tcp_.data = this;
}

Connection::~Connection() {
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
  }
}

void Connection::release() noexcept {
  handler_ = nullptr;
  released_ = true;
  if (handle_closed_) {
    delete this;  // libuv is done with the handle and the owner with the object
    return;
  }
  if (close_requested_) {
    return;  // the graceful close finishes on its own and frees the memory
  }
  close();
}

void Connection::close() {
  if (closing_) {
    return;
  }
  closing_ = true;
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &Connection::on_closed);
}

void Connection::on_closed(uv_handle_t* handle) noexcept {
  // Pending write, connect and shutdown requests have all been called back (with
  // UV_ECANCELED) before libuv calls this, so libuv no longer refers to the memory. The
  // owner may still hold its pointer (an error closed the socket, not the owner): then
  // the memory goes when the owner releases it.
  auto* self = static_cast<Connection*>(handle->data);
  self->handle_closed_ = true;
  if (self->released_) {
    delete self;
  }
}

int Connection::connect(const sockaddr* address) {
  connect_request_.data = this;
  return uv_tcp_connect(&connect_request_, &tcp_, address, &Connection::on_connect_done);
}

void Connection::on_connect_done(uv_connect_t* request, int status) noexcept {
  auto* self = static_cast<Connection*>(request->data);
  if (self->handler_gone()) {
    return;
  }
  if (status == 0) {
    self->configure_socket();
  }
  self->handler_->on_connected(status);
}

void Connection::configure_socket(TcpOptions options) {
  uv_os_fd_t fd = -1;
  if (options == TcpOptions::kSet && uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) == 0) {
    set_tcp_options(fd, keepalive_);
  }
  sockaddr_storage address{};
  int length = sizeof(address);
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    char text[INET6_ADDRSTRLEN] = {};
    if (address.ss_family == AF_INET6) {
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
      uv_ip6_name(v6, text, sizeof(text));
      peer_port_ = ntohs(v6->sin6_port);
    } else {
      auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
      uv_ip4_name(v4, text, sizeof(text));
      peer_port_ = ntohs(v4->sin_port);
    }
    peer_address_ = text;
  }
}

void Connection::start_reading() {
  if (reading_ || closing()) {
    return;
  }
  if (uv_read_start(stream(), &Connection::on_alloc, &Connection::on_read) == 0) {
    reading_ = true;
  }
}

void Connection::stop_reading() {
  if (!reading_) {
    return;
  }
  uv_read_stop(stream());
  reading_ = false;
}

void Connection::on_alloc(uv_handle_t*, std::size_t, uv_buf_t* buf) noexcept {
  buf->base = t_read_buffer.data();
  buf->len = t_read_buffer.size();
}

struct Connection::ReadScope {
  ReadScope() { ++t_reads_in_progress; }
  ~ReadScope() {
    if (--t_reads_in_progress > 0) {
      return;
    }
    // A flush may fail and call a handler that writes elsewhere: that write is immediate.
    while (!t_flush_after_read.empty()) {
      std::vector<Connection*> due = std::move(t_flush_after_read);
      t_flush_after_read.clear();
      for (Connection* connection : due) {
        connection->flush_pending_ = false;
        connection->flush();
      }
    }
  }
  ReadScope(const ReadScope&) = delete;
  ReadScope& operator=(const ReadScope&) = delete;
};

void Connection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* self = static_cast<Connection*>(stream->data);
  if (self->closing_) {
    return;
  }
  ReadScope scope;
  if (nread < 0) {
    self->fail(nread == UV_EOF ? "peer closed the connection"
                               : uv_strerror(static_cast<int>(nread)));
    return;
  }
  if (nread == 0) {
    return;
  }
  self->bytes_received_ += static_cast<std::uint64_t>(nread);
  std::string_view bytes(buf->base, static_cast<std::size_t>(nread));
  self->handling_read_ = true;
  if (self->ssl_ != nullptr) {
    self->handle_ciphertext(bytes);
  } else if (self->handler_ != nullptr && !self->close_requested_) {
    self->handler_->on_data(bytes);
  }
  self->handling_read_ = false;
  // Once all of this read is handled (the TLS engine has delivered what it could), so the
  // bytes still held above the socket are known. The connection outlives this call.
  self->apply_read_low_watermark();
}

bool Connection::start_tls(SSL_CTX* context, Role role, const std::string& verify_host) {
  if (ssl_ != nullptr) {
    return false;
  }
  ssl_ = SSL_new(context);
  if (ssl_ == nullptr) {
    return false;
  }
  if (!attach_tls_transport(ssl_, &transport_)) {
    SSL_free(ssl_);
    ssl_ = nullptr;
    return false;
  }
#ifdef OPENSSL_IS_BORINGSSL
  // The certificate, key, cipher and verification settings each connection copies are
  // needed only for the handshake: an idle session should not keep them.
  SSL_set_shed_handshake_config(ssl_, 1);
#endif
  if (role == Role::kServer) {
    SSL_set_accept_state(ssl_);
    return true;
  }
  SSL_set_connect_state(ssl_);
  // The same name verified at the same address: a session saved from there may resume.
  tls_session_key_ = verify_host + '|' + peer_address_ + ':' + std::to_string(peer_port_);
  TlsSessionCache::prepare(ssl_, &tls_session_key_);
  if (!verify_host.empty()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (is_ip_literal(verify_host)) {
      X509_VERIFY_PARAM_set1_ip_asc(param, verify_host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl_, verify_host.c_str());
      X509_VERIFY_PARAM_set1_host(param, verify_host.data(), verify_host.size());
    }
  }
  // Send the ClientHello now.
  int result = SSL_do_handshake(ssl_);
  if (result != 1 && SSL_get_error(ssl_, result) != SSL_ERROR_WANT_READ) {
    fail("TLS handshake failed: " + take_tls_errors());
    return false;
  }
  flush();
  return true;
}

void Connection::replay(std::string_view bytes) {
  if (bytes.empty() || closing()) {
    return;
  }
  if (ssl_ != nullptr) {
    handle_ciphertext(bytes);
  } else if (handler_ != nullptr) {
    handler_->on_data(bytes);
  }
}

std::string Connection::tls_summary() const {
  if (ssl_ == nullptr || !handshake_done_) {
    return "none";
  }
  std::string summary = SSL_get_version(ssl_);
  if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_)) {
    summary += ' ';
    summary += SSL_CIPHER_get_name(cipher);
  }
  if (SSL_session_reused(ssl_) == 1) {
    summary += " resumed";
  }
  return summary;
}

void Connection::handle_ciphertext(std::string_view bytes) {
  // The engine reads straight from bytes, which live only for this call: whatever the
  // engine does not take now (only when closing) is dropped with it. The connection
  // outlives this call even if an upcall releases it (the memory goes in on_closed).
  transport_.ciphertext_in = bytes;
  decrypt_available();
  transport_.ciphertext_in = {};
}

void Connection::decrypt_available() {
  if (!handshake_done_) {
    int result = SSL_do_handshake(ssl_);
    if (result != 1) {
      int error = SSL_get_error(ssl_, result);
      flush();
      if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
        std::string reason = "TLS handshake failed: " + take_tls_errors();
        if (SSL_get_verify_result(ssl_) != X509_V_OK) {
          reason += " (certificate: ";
          reason += X509_verify_cert_error_string(SSL_get_verify_result(ssl_));
          reason += ')';
        }
        fail(reason);
      }
      return;
    }
    handshake_done_ = true;
    received_when_heard_ = bytes_received_;
    flush();  // seals what was written before the handshake finished
    if (handler_ != nullptr) {
      handler_->on_tls_established();
    }
    if (handler_gone()) {
      return;
    }
  }
  pump_tls_reads();
}

void Connection::pump_tls_reads() {
  // Records are decrypted into one buffer until it is full or the ciphertext runs out, and
  // handed up together: an upstream that sends 4 KiB records (Dovecot does) would
  // otherwise cost one upcall, one scan and one outbound record per 4 KiB.
  while (!handler_gone() && !close_requested_) {
    std::size_t filled = 0;
    int error = SSL_ERROR_NONE;
    while (filled < t_plaintext_buffer.size()) {
      const int result = SSL_read(ssl_, t_plaintext_buffer.data() + filled,
                                  static_cast<int>(t_plaintext_buffer.size() - filled));
      if (result <= 0) {
        error = SSL_get_error(ssl_, result);  // before anything else touches the SSL
        break;
      }
      filled += static_cast<std::size_t>(result);
    }
    if (filled > 0) {
      received_when_heard_ = bytes_received_;
      handler_->on_data(std::string_view(t_plaintext_buffer.data(), filled));
      if (filled == t_plaintext_buffer.size()) {
        continue;  // full: more may be waiting
      }
      if (handler_gone() || close_requested_) {
        break;
      }
    }
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      break;
    }
    if (error == SSL_ERROR_ZERO_RETURN) {
      fail("peer closed the TLS session");
    } else {
      fail("TLS error: " + take_tls_errors());
    }
    return;
  }
  // SSL_read may have produced records of its own (alerts, key updates).
  if (!closing_) {
    flush();
  }
}

void Connection::write(std::string_view plaintext) {
  if (closing() || plaintext.empty()) {
    return;
  }
  if (ssl_ == nullptr) {
    out_.append(plaintext);
  } else if (handshake_done_ && !writing_ && staged_plaintext_.empty() &&
             t_reads_in_progress == 0) {
    write_tls(plaintext);
  } else {
    // Sealed when the write in flight completes (or the handshake does): many small
    // writes then become full 16 KiB records instead of one record each.
    staged_plaintext_.append(plaintext);
  }
  after_write();
}

void Connection::after_write() {
  if (pending_bytes() >= high_watermark_) {
    was_above_high_ = true;
  }
  flush();
}

void Connection::seal_staged_plaintext() {
  if (staged_plaintext_.empty() || ssl_ == nullptr || !handshake_done_) {
    return;
  }
  write_tls(staged_plaintext_);
  staged_plaintext_.clear();
}

void Connection::write_tls(std::string_view plaintext) {
  // The transport never refuses bytes, so SSL_write takes everything at once.
  while (!plaintext.empty()) {
    int chunk = static_cast<int>(std::min<std::size_t>(plaintext.size(), 1 << 20));
    int result = SSL_write(ssl_, plaintext.data(), chunk);
    if (result <= 0) {
      fail("TLS write failed: " + take_tls_errors());
      return;
    }
    plaintext.remove_prefix(static_cast<std::size_t>(result));
  }
}

void Connection::flush() {
  if (writing_ || closing_ || flush_pending_) {
    return;
  }
  if (t_reads_in_progress > 0) {
    flush_pending_ = true;
    t_flush_after_read.push_back(this);
    return;
  }
  seal_staged_plaintext();
  if (out_.empty()) {
    maybe_finish_graceful_close();
    return;
  }
  if (!was_above_high_ && write_at_once()) {
    return;
  }
  inflight_.swap(out_);
  out_.clear();
  writing_ = true;
  write_request_.data = this;
  uv_buf_t buffer = uv_buf_init(inflight_.data(), static_cast<unsigned>(inflight_.size()));
  int result = uv_write(&write_request_, stream(), &buffer, 1, &Connection::on_write_done);
  if (result != 0) {
    writing_ = false;
    fail(uv_strerror(result));
  }
}

bool Connection::write_at_once() {
  // Most replies fit in the socket buffer: written here, they skip libuv's write queue and
  // the POLLOUT watcher it starts and stops (an epoll_ctl per write, seen with strace). An
  // error is left to uv_write, which reports it from its callback rather than inside the
  // handler's own write call.
  uv_buf_t buffer = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
  const int written = uv_try_write(stream(), &buffer, 1);
  if (written <= 0) {
    return false;
  }
  bytes_sent_ += static_cast<std::uint64_t>(written);
  if (static_cast<std::size_t>(written) < out_.size()) {
    out_.erase(0, static_cast<std::size_t>(written));
    return false;
  }
  out_.clear();
  if (!streaming_) {
    release_spare_capacity();
  }
  maybe_finish_graceful_close();
  return true;
}

void Connection::on_write_done(uv_write_t* request, int status) noexcept {
  auto* self = static_cast<Connection*>(request->data);
  self->writing_ = false;
  if (self->closing_) {
    return;
  }
  if (status < 0) {
    self->fail(uv_strerror(status));
    return;
  }
  self->bytes_sent_ += self->inflight_.size();
  self->inflight_.clear();
  if (!self->streaming_) {
    self->release_spare_capacity();
  }
  self->flush();
  if (self->closing_) {
    return;
  }
  if (self->was_above_high_ && self->pending_bytes() < self->low_watermark_) {
    self->was_above_high_ = false;
    if (self->handler_ != nullptr) {
      self->handler_->on_drained();
    }
  }
}

void Connection::set_streaming(bool streaming) {
  streaming_ = streaming;
  if (!streaming_ && !writing_) {
    release_spare_capacity();
  }
}

void Connection::release_spare_capacity() {
  if (!out_.empty() || !staged_plaintext_.empty()) {
    return;  // not drained: the next completed write tries again
  }
  // Drained outside a message: the connection may now idle for minutes, and thousands of
  // idle connections should hold no buffers (a reply allocates its own, a small cost next
  // to its write).
  for (std::string* buffer : {&inflight_, &out_, &staged_plaintext_}) {
    if (buffer->empty()) {
      buffer->shrink_to_fit();
    }
  }
}

void Connection::close_after_flush() {
  if (closing()) {
    return;
  }
  close_requested_ = true;
  stop_reading();
  if (ssl_ != nullptr && handshake_done_) {
    seal_staged_plaintext();  // before the close_notify, not after it
    SSL_shutdown(ssl_);       // queues close_notify (RFC 8314 §3.4)
  }
  flush();
}

void Connection::maybe_finish_graceful_close() {
  if (!close_requested_ || shutdown_started_ || writing_ || !out_.empty()) {
    return;
  }
  shutdown_started_ = true;
  shutdown_request_.data = this;
  if (uv_shutdown(&shutdown_request_, stream(), &Connection::on_shutdown_done) != 0) {
    close();
  }
}

void Connection::on_shutdown_done(uv_shutdown_t* request, int) noexcept {
  auto* self = static_cast<Connection*>(request->data);
  self->close();
}

void Connection::fail(std::string_view reason) {
  if (closing_) {
    return;
  }
  Handler* handler = handler_;
  std::string why(reason);
  close();
  if (handler != nullptr && !close_requested_) {
    handler->on_disconnected(why);
  }
}

}  // namespace popbridge::proxy
