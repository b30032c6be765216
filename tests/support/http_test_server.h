// SPDX-License-Identifier: Apache-2.0
#pragma once

// For the HTTP client's tests: a throw-away PKI, a tiny HTTP/1.1 server on the test's own
// loop (built on Connection, so TLS too), and a fixture that runs the loop until a
// condition holds, without sleeping.

#include <gtest/gtest.h>
#include <netdb.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>
#include <uv.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/base/uv_handle.h"
#include "proxy/net/connection.h"
#include "proxy/net/http_client.h"

namespace popbridge::proxy::http_testing {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------
// A throw-away PKI: a CA and server certificates signed by it, made in memory per test.

// Owners for libcrypto objects, spelled out (not bssl::UniquePtr) so the test builds
// against OpenSSL 3 too.
template <typename T, void (*Free)(T*)>
struct Freer {
  void operator()(T* object) const { Free(object); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Freer<EVP_PKEY, EVP_PKEY_free>>;
using CertificatePtr = std::unique_ptr<X509, Freer<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Freer<BIO, BIO_free_all>>;
using KeyContextPtr = std::unique_ptr<EVP_PKEY_CTX, Freer<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;

inline KeyPtr make_key() {
  KeyContextPtr context(EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr));
  EXPECT_EQ(EVP_PKEY_keygen_init(context.get()), 1);
  EXPECT_EQ(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(context.get(), NID_X9_62_prime256v1), 1);
  EVP_PKEY* key = nullptr;
  EXPECT_EQ(EVP_PKEY_keygen(context.get(), &key), 1);
  return KeyPtr(key);
}

inline void add_extension(X509* certificate, X509V3_CTX* context, int nid, const char* value) {
  X509_EXTENSION* extension = X509V3_EXT_nconf_nid(nullptr, context, nid, value);
  ASSERT_NE(extension, nullptr) << value;
  X509_add_ext(certificate, extension, -1);
  X509_EXTENSION_free(extension);
}

// A CA when issuer is null (self-signed), else a server certificate for alt_names.
inline CertificatePtr make_certificate(EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key,
                                       const char* alt_names) {
  static long serial = 1;
  CertificatePtr certificate(X509_new());
  X509* cert = certificate.get();
  X509_set_version(cert, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  const char* common_name = issuer == nullptr ? "popbridge test CA" : "popbridge test server";
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name), -1, -1, 0);
  X509_set_issuer_name(cert, X509_get_subject_name(issuer != nullptr ? issuer : cert));
  X509_set_pubkey(cert, key);
  X509V3_CTX context;
  X509V3_set_ctx(&context, issuer != nullptr ? issuer : cert, cert, nullptr, nullptr, 0);
  if (issuer == nullptr) {
    add_extension(cert, &context, NID_basic_constraints, "critical,CA:TRUE");
    add_extension(cert, &context, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_extension(cert, &context, NID_basic_constraints, "critical,CA:FALSE");
    add_extension(cert, &context, NID_ext_key_usage, "serverAuth");
    add_extension(cert, &context, NID_subject_alt_name, alt_names);
  }
  EXPECT_NE(X509_sign(cert, issuer_key != nullptr ? issuer_key : key, EVP_sha256()), 0);
  return certificate;
}

class TestPki {
 public:
  TestPki() : ca_key_(make_key()), ca_(make_certificate(ca_key_.get(), nullptr, nullptr, nullptr)) {
    static int counter = 0;
    ca_file_ = ::testing::TempDir() + "http_client_test_ca_" + std::to_string(::getpid()) + "_" +
               std::to_string(counter++) + ".pem";
    BioPtr file(BIO_new_file(ca_file_.c_str(), "w"));
    EXPECT_NE(file, nullptr);
    EXPECT_EQ(PEM_write_bio_X509(file.get(), ca_.get()), 1);
  }
  ~TestPki() { std::remove(ca_file_.c_str()); }
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  const std::string& ca_file() const { return ca_file_; }

  // A server context whose certificate names alt_names ("DNS:localhost,IP:127.0.0.1").
  SslCtxPtr server_context(const char* alt_names) const {
    KeyPtr key = make_key();
    CertificatePtr certificate = make_certificate(key.get(), ca_.get(), ca_key_.get(), alt_names);
    SslCtxPtr context(SSL_CTX_new(TLS_server_method()));
    EXPECT_EQ(SSL_CTX_use_certificate(context.get(), certificate.get()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey(context.get(), key.get()), 1);
    return context;
  }

 private:
  KeyPtr ca_key_;
  CertificatePtr ca_;
  std::string ca_file_;
};

// ---------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server on the test's own loop, built on Connection (so TLS too).

struct SeenRequest {
  std::string method;
  std::string target;
  std::vector<protocol::HttpHeader> headers;
  std::string body;
  std::size_t connection = 0;  // which accepted connection, from 0
  std::size_t index = 0;       // which request on that connection, from 0

  std::optional<std::string_view> header(std::string_view name) const {
    return protocol::find_header(headers, name);
  }
};

struct Reply {
  std::string bytes;           // sent as they are
  bool silent = false;         // never answer
  bool close_instead = false;  // close the connection without answering
  bool close_after = false;    // answer, then close
  // Sent after bytes, one every `every` (a slow server): close_after waits for them.
  std::vector<std::string> then{};
  std::chrono::milliseconds every{0};
};

inline std::string response(int status, std::string_view body,
                            std::string_view extra_headers = "") {
  return "HTTP/1.1 " + std::to_string(status) + " Whatever\r\n" + std::string(extra_headers) +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

class TestServer {
 public:
  using Responder = std::function<Reply(const SeenRequest&)>;

  // A plain function, not a lambda: OpenSSL's macro casts it to void (*)(void).
  static int record_server_name(SSL* ssl, int*, void* arg) {
    if (const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) {
      static_cast<TestServer*>(arg)->server_names.emplace_back(name);
    }
    return SSL_TLSEXT_ERR_OK;
  }

  // Listens on address (port 0: any) with TLS when tls is set.
  TestServer(uv_loop_t* loop, Responder responder, SSL_CTX* tls = nullptr,
             std::optional<sockaddr_storage> address = std::nullopt)
      : loop_(loop),
        responder_(std::move(responder)),
        tls_(tls),
        listener_([loop](uv_tcp_t* handle) { return uv_tcp_init(loop, handle); }) {
    listener_.get()->data = this;
    if (tls_ != nullptr) {
      SSL_CTX_set_tlsext_servername_arg(tls_, this);
      SSL_CTX_set_tlsext_servername_callback(tls_, &TestServer::record_server_name);
    }
    sockaddr_storage bind_address{};
    if (address) {
      bind_address = *address;
    } else {
      uv_ip4_addr("127.0.0.1", 0, reinterpret_cast<sockaddr_in*>(&bind_address));
    }
    EXPECT_EQ(uv_tcp_bind(listener_.get(), reinterpret_cast<const sockaddr*>(&bind_address), 0), 0);
    EXPECT_EQ(
        uv_listen(reinterpret_cast<uv_stream_t*>(listener_.get()), 16, &TestServer::on_accept), 0);
    sockaddr_storage bound{};
    int length = sizeof(bound);
    uv_tcp_getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&bound), &length);
    port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }

  std::uint16_t port() const { return port_; }
  std::string url(std::string_view path, std::string_view host = "127.0.0.1") const {
    return std::string(tls_ != nullptr ? "https://" : "http://") + std::string(host) + ":" +
           std::to_string(port_) + std::string(path);
  }
  std::size_t accepted() const { return peers_.size(); }
  const std::vector<SeenRequest>& requests() const { return requests_; }
  // Connections the client closed (or broke).
  std::size_t closed_by_client() const {
    std::size_t count = 0;
    for (const auto& peer : peers_) {
      count += peer->closed_by_client ? 1 : 0;
    }
    return count;
  }
  // The SNI names clients sent.
  std::vector<std::string> server_names;

 private:
  struct Peer final : Connection::Handler {
    TestServer* server = nullptr;
    ConnectionPtr connection;
    std::size_t number = 0;
    std::size_t served = 0;
    std::string buffer;
    bool closed_by_client = false;
    std::unique_ptr<Timer> pacing;  // sends a reply's `then` pieces

    void send_later(std::vector<std::string> pieces, std::chrono::milliseconds every,
                    bool close_after, std::size_t next = 0) {
      if (!pacing) {
        pacing = std::make_unique<Timer>(server->loop_);
      }
      pacing->start(static_cast<std::uint64_t>(every.count()),
                    [this, pieces = std::move(pieces), every, close_after, next]() mutable {
                      if (connection == nullptr) {
                        return;
                      }
                      connection->write(pieces[next]);
                      if (next + 1 < pieces.size()) {
                        send_later(std::move(pieces), every, close_after, next + 1);
                      } else if (close_after) {
                        connection->close_after_flush();
                        connection.reset();
                      }
                    });
    }

    void on_data(std::string_view bytes) override {
      buffer.append(bytes);
      while (connection != nullptr && next_request()) {
      }
    }
    void on_disconnected(std::string_view) override {
      closed_by_client = true;
      connection.reset();
    }

    // A deliberately plain reader: head up to the blank line, then Content-Length bytes.
    bool next_request() {
      const std::size_t head_end = buffer.find("\r\n\r\n");
      if (head_end == std::string::npos) {
        return false;
      }
      SeenRequest request;
      std::string_view head(buffer.data(), head_end);
      std::size_t line_end = head.find("\r\n");
      std::string_view request_line = head.substr(0, line_end);
      const std::size_t space = request_line.find(' ');
      request.method = request_line.substr(0, space);
      request.target = request_line.substr(space + 1, request_line.rfind(' ') - space - 1);
      while (line_end != std::string_view::npos) {
        head.remove_prefix(line_end + 2);
        line_end = head.find("\r\n");
        std::string_view line = head.substr(0, line_end);
        const std::size_t colon = line.find(':');
        request.headers.push_back(
            {std::string(line.substr(0, colon)), std::string(line.substr(colon + 2))});
      }
      std::size_t length = 0;
      if (auto value = request.header("Content-Length")) {
        length = std::stoul(std::string(*value));
      }
      if (buffer.size() < head_end + 4 + length) {
        return false;
      }
      request.body = buffer.substr(head_end + 4, length);
      buffer.erase(0, head_end + 4 + length);
      request.connection = number;
      request.index = served++;
      server->requests_.push_back(request);
      const Reply reply = server->responder_(request);
      // Releasing the connection (allowed inside its upcalls) closes it; a graceful
      // close carries on after the release.
      if (reply.close_instead) {
        connection.reset();
      } else if (!reply.silent) {
        connection->write(reply.bytes);
        if (!reply.then.empty()) {
          send_later(reply.then, reply.every, reply.close_after);
        } else if (reply.close_after) {
          connection->close_after_flush();
          connection.reset();
        }
      }
      return true;
    }
  };

  static void on_accept(uv_stream_t* listener, int status) noexcept {
    auto* self = static_cast<TestServer*>(listener->data);
    if (self == nullptr || status != 0) {
      return;
    }
    auto peer = std::make_unique<Peer>();
    peer->server = self;
    peer->number = self->peers_.size();
    peer->connection = Connection::create(self->loop_, peer.get());
    if (uv_accept(listener, peer->connection->stream()) != 0) {
      return;
    }
    if (self->tls_ != nullptr) {
      peer->connection->start_tls(self->tls_, Connection::Role::kServer, "");
    }
    peer->connection->start_reading();
    self->peers_.push_back(std::move(peer));
  }

  uv_loop_t* loop_;
  Responder responder_;
  SSL_CTX* tls_;
  UvHandle<uv_tcp_t> listener_;
  std::uint16_t port_ = 0;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::vector<SeenRequest> requests_;
};

inline Reply ok_reply(std::string_view body = "ok") { return Reply{response(200, body)}; }

// ---------------------------------------------------------------------------------------

// Runs loop until done() or the limit; no sleeping, the guard timer wakes it.
inline bool run_loop_until(uv_loop_t* loop, const std::function<bool()>& done,
                           std::chrono::milliseconds limit) {
  bool expired = false;
  Timer guard(loop);
  guard.start(static_cast<std::uint64_t>(limit.count()), [&expired] { expired = true; });
  while (!done() && !expired) {
    uv_run(loop, UV_RUN_ONCE);
  }
  return done();
}

class HttpClientTest : public ::testing::Test {
 protected:
  HttpClientTest() {
    uv_loop_init(&loop_);
    deferred_delete_ = std::make_unique<DeferredDelete>(&loop_);
  }
  ~HttpClientTest() override {
    deferred_delete_.reset();
    // The test's objects are gone; their handles finish closing on these turns (pending
    // DNS look-ups are cancelled and call back too).
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (uv_loop_alive(&loop_) != 0 && std::chrono::steady_clock::now() < deadline) {
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a libuv handle was left open";
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
    return run_loop_until(&loop_, done, limit);
  }

  // Issues a request and runs the loop until its callback ran.
  HttpResult fetch(HttpClient& client, HttpRequest request) {
    std::optional<HttpResult> result;
    HttpClient::RequestHandle handle =
        client.request(std::move(request), [&result](HttpResult r) { result = std::move(r); });
    EXPECT_FALSE(result.has_value()) << "the callback ran inside request()";
    EXPECT_TRUE(run_until([&] { return result.has_value(); })) << "no callback";
    return result.value_or(HttpResult{HttpError::kProtocol, "no callback", 0, {}, {}});
  }

  static HttpRequest get(std::string url) {
    HttpRequest request;
    request.url = std::move(url);
    return request;
  }

  // A port nothing listens on: bound, then closed again.
  std::uint16_t closed_port() {
    std::uint16_t port = 0;
    {
      UvHandle<uv_tcp_t> socket([this](uv_tcp_t* handle) { return uv_tcp_init(&loop_, handle); });
      sockaddr_in address{};
      uv_ip4_addr("127.0.0.1", 0, &address);
      EXPECT_EQ(uv_tcp_bind(socket.get(), reinterpret_cast<const sockaddr*>(&address), 0), 0);
      sockaddr_storage bound{};
      int length = sizeof(bound);
      uv_tcp_getsockname(socket.get(), reinterpret_cast<sockaddr*>(&bound), &length);
      port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    }
    uv_run(&loop_, UV_RUN_NOWAIT);  // lets the close finish
    return port;
  }

  // The first address "localhost" resolves to, as the client's resolver picks it.
  static sockaddr_storage localhost_address() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* result = nullptr;
    sockaddr_storage address{};
    if (getaddrinfo("localhost", nullptr, &hints, &result) == 0 && result != nullptr) {
      std::memcpy(&address, result->ai_addr, result->ai_addrlen);
      freeaddrinfo(result);
    }
    return address;
  }

  uv_loop_t loop_{};
  std::unique_ptr<DeferredDelete> deferred_delete_;
};

}  // namespace popbridge::proxy::http_testing
