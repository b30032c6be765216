// SPDX-License-Identifier: Apache-2.0
#include "proxy/net/http_client.h"

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

namespace popbridge::proxy {
namespace {

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

KeyPtr make_key() {
  KeyContextPtr context(EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr));
  EXPECT_EQ(EVP_PKEY_keygen_init(context.get()), 1);
  EXPECT_EQ(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(context.get(), NID_X9_62_prime256v1), 1);
  EVP_PKEY* key = nullptr;
  EXPECT_EQ(EVP_PKEY_keygen(context.get(), &key), 1);
  return KeyPtr(key);
}

void add_extension(X509* certificate, X509V3_CTX* context, int nid, const char* value) {
  X509_EXTENSION* extension = X509V3_EXT_nconf_nid(nullptr, context, nid, value);
  ASSERT_NE(extension, nullptr) << value;
  X509_add_ext(certificate, extension, -1);
  X509_EXTENSION_free(extension);
}

// A CA when issuer is null (self-signed), else a server certificate for alt_names.
CertificatePtr make_certificate(EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key,
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
};

std::string response(int status, std::string_view body, std::string_view extra_headers = "") {
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
        if (reply.close_after) {
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

Reply ok_reply(std::string_view body = "ok") { return Reply{response(200, body)}; }

// ---------------------------------------------------------------------------------------

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

  // Runs the loop until done() or the limit; no sleeping, the guard timer wakes it.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
    bool expired = false;
    Timer guard(&loop_);
    guard.start(static_cast<std::uint64_t>(limit.count()), [&expired] { expired = true; });
    while (!done() && !expired) {
      uv_run(&loop_, UV_RUN_ONCE);
    }
    return done();
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

// --- URL and form helpers --------------------------------------------------------------

TEST(HttpUrl, ParsesWhatTheHooksUse) {
  struct Case {
    const char* url;
    bool tls;
    const char* host;
    std::uint16_t port;
    const char* target;
    const char* authority;
  };
  const Case cases[] = {
      {"http://auth.example/hook", false, "auth.example", 80, "/hook", "auth.example"},
      {"HTTPS://Login.Example.COM", true, "login.example.com", 443, "/", "login.example.com"},
      {"https://idp:8443/oauth2/token?x=1#frag", true, "idp", 8443, "/oauth2/token?x=1",
       "idp:8443"},
      {"http://127.0.0.1:9000?a=b", false, "127.0.0.1", 9000, "/?a=b", "127.0.0.1:9000"},
      {"http://[::1]:8080/a", false, "::1", 8080, "/a", "[::1]:8080"},
      {"https://[2001:db8::7]/", true, "2001:db8::7", 443, "/", "[2001:db8::7]"},
      {"http://host:/p", false, "host", 80, "/p", "host"},
      {"http://host:80/p", false, "host", 80, "/p", "host"},
  };
  for (const Case& c : cases) {
    std::string error;
    std::optional<HttpUrl> url = parse_http_url(c.url, error);
    ASSERT_TRUE(url.has_value()) << c.url << ": " << error;
    EXPECT_EQ(url->tls, c.tls) << c.url;
    EXPECT_EQ(url->host, c.host) << c.url;
    EXPECT_EQ(url->port, c.port) << c.url;
    EXPECT_EQ(url->target, c.target) << c.url;
    EXPECT_EQ(url->authority(), c.authority) << c.url;
  }
  std::string error;
  EXPECT_EQ(parse_http_url("https://[::1]/", error)->origin(), "https://[::1]:443");
}

TEST(HttpUrl, RefusesEverythingElse) {
  for (const char* bad :
       {"", "auth.example/hook", "ftp://host/", "http://", "http:///path", "http://user:pw@host/",
        "http://host:0/", "http://host:65536/", "http://host:8x/", "http://[::1/", "http://[zz]/",
        "http://[::1]x/", "http://ho st/", "http://host/a b", "http://host/\x7f",
        "http://h\xc3\xa9st/"}) {
    std::string error;
    EXPECT_FALSE(parse_http_url(bad, error).has_value()) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

TEST(FormUrlencode, FollowsTheWhatwgRules) {
  EXPECT_EQ(form_urlencode("azAZ09*-._"), "azAZ09*-._");
  EXPECT_EQ(form_urlencode("a b+c&d=e/f~\xc3\xa9"), "a+b%2Bc%26d%3De%2Ff%7E%C3%A9");
  EXPECT_EQ(form_urlencode({{"grant_type", "refresh_token"}, {"refresh_token", "a/b+c"}}),
            "grant_type=refresh_token&refresh_token=a%2Fb%2Bc");
  EXPECT_EQ(form_urlencode(std::vector<std::pair<std::string, std::string>>{}), "");
}

TEST(HttpError, Names) {
  EXPECT_EQ(to_string(HttpError::kTooLarge), "too_large");
  EXPECT_EQ(to_string(HttpError::kTls), "tls");
}

// --- plain HTTP --------------------------------------------------------------------------

TEST_F(HttpClientTest, GetWithHeadersLikeNginxAuthHttp) {
  TestServer server(&loop_, [](const SeenRequest&) {
    return Reply{response(200, "",
                          "Auth-Status: OK\r\nAuth-Server: 192.0.2.10\r\nAuth-Port: 993\r\n"
                          "X-Map: one\r\nx-map: two\r\n")};
  });
  HttpClient client(&loop_);
  HttpRequest request = get(server.url("/auth?proto=pop3"));
  request.headers = {{"Auth-Method", "plain"},        {"Auth-User", "alice"},
                     {"Auth-Pass", "s3cret pw"},      {"Auth-Protocol", "pop3"},
                     {"Auth-Login-Attempt", "1"},     {"Client-IP", "198.51.100.4"},
                     {"Client-Host", "[UNAVAILABLE]"}};
  const HttpResult result = fetch(client, std::move(request));

  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_EQ(result.status, 200);
  EXPECT_EQ(result.header("auth-status"), "OK");
  EXPECT_EQ(result.header("Auth-Server"), "192.0.2.10");
  EXPECT_EQ(result.header("Auth-Port"), "993");
  EXPECT_EQ(protocol::find_headers(result.headers, "X-Map"),
            (std::vector<std::string_view>{"one", "two"}));
  EXPECT_TRUE(result.body.empty());

  ASSERT_EQ(server.requests().size(), 1u);
  const SeenRequest& seen = server.requests()[0];
  EXPECT_EQ(seen.method, "GET");
  EXPECT_EQ(seen.target, "/auth?proto=pop3");
  EXPECT_EQ(seen.headers.front().name, "Host") << "Host comes first";
  EXPECT_EQ(seen.header("Host"), "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_EQ(seen.header("Auth-Pass"), "s3cret pw");
  EXPECT_EQ(seen.header("Client-Host"), "[UNAVAILABLE]");
  EXPECT_EQ(seen.header("Content-Length"), std::nullopt) << "no body, no length on a GET";
}

TEST_F(HttpClientTest, PostFormBodyGetsJson) {
  TestServer server(&loop_, [](const SeenRequest&) {
    return Reply{response(200, R"({"access_token":"t0k","expires_in":3600})",
                          "Content-Type: application/json\r\n")};
  });
  HttpClient client(&loop_);
  HttpRequest request;
  request.method = "POST";
  request.url = server.url("/oauth2/token");
  request.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
                     {"Host", "idp.example"}};
  request.body = form_urlencode({{"grant_type", "password"}, {"password", "p&ss w"}});
  const HttpResult result = fetch(client, std::move(request));

  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_EQ(result.body, R"({"access_token":"t0k","expires_in":3600})");
  EXPECT_EQ(result.header("content-type"), "application/json");
  ASSERT_EQ(server.requests().size(), 1u);
  const SeenRequest& seen = server.requests()[0];
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.body, "grant_type=password&password=p%26ss+w");
  EXPECT_EQ(seen.header("Content-Length"), "37");
  EXPECT_EQ(seen.header("Host"), "idp.example") << "a given Host replaces ours";
  EXPECT_EQ(protocol::find_headers(seen.headers, "Host").size(), 1u);
}

TEST_F(HttpClientTest, EmptyPostSendsContentLengthZero) {
  TestServer server(&loop_, [](const SeenRequest&) { return ok_reply(); });
  HttpClient client(&loop_);
  HttpRequest request = get(server.url("/"));
  request.method = "POST";
  ASSERT_TRUE(fetch(client, std::move(request)).ok());
  EXPECT_EQ(server.requests().at(0).header("Content-Length"), "0");
}

TEST_F(HttpClientTest, ChunkedResponse) {
  TestServer server(&loop_, [](const SeenRequest&) {
    return Reply{
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n1;ext=x\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"};
  });
  HttpClient client(&loop_);
  const HttpResult result = fetch(client, get(server.url("/")));
  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_EQ(result.body, "hello, world");
  EXPECT_EQ(client.idle_connections(), 1u) << "a chunked response keeps the connection";
}

TEST_F(HttpClientTest, BodyUntilTheServerCloses) {
  TestServer server(&loop_, [](const SeenRequest&) {
    return Reply{"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it", false, false, true};
  });
  HttpClient client(&loop_);
  const HttpResult result = fetch(client, get(server.url("/")));
  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_EQ(result.body, "all of it");
  EXPECT_EQ(client.idle_connections(), 0u);
}

TEST_F(HttpClientTest, HeadResponseHasNoBodyAndKeepsTheConnection) {
  TestServer server(&loop_, [](const SeenRequest& request) {
    return request.method == "HEAD" ? Reply{"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"}
                                    : ok_reply();
  });
  HttpClient client(&loop_);
  HttpRequest request = get(server.url("/"));
  request.method = "HEAD";
  const HttpResult result = fetch(client, std::move(request));
  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_TRUE(result.body.empty());
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  EXPECT_EQ(server.accepted(), 1u);
}

TEST_F(HttpClientTest, ErrorStatusIsAResponseNotAnError) {
  TestServer server(&loop_, [](const SeenRequest&) {
    return Reply{
        response(502, "bad gateway", "Auth-Status: Temporary failure\r\nAuth-Wait: 3\r\n")};
  });
  HttpClient client(&loop_);
  const HttpResult result = fetch(client, get(server.url("/")));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.status, 502);
  EXPECT_EQ(result.header("Auth-Wait"), "3");
}

// --- keep-alive ------------------------------------------------------------------------

TEST_F(HttpClientTest, KeepAliveReusesTheConnection) {
  TestServer server(&loop_, [](const SeenRequest& request) {
    return ok_reply("answer " + std::to_string(request.index));
  });
  HttpClient client(&loop_);
  const HttpResult first = fetch(client, get(server.url("/one")));
  ASSERT_TRUE(first.ok()) << first.error_text;
  EXPECT_EQ(client.idle_connections(), 1u);
  const HttpResult second = fetch(client, get(server.url("/two")));
  ASSERT_TRUE(second.ok()) << second.error_text;
  EXPECT_EQ(second.body, "answer 1") << "the server's second request on one connection";

  EXPECT_EQ(server.accepted(), 1u);
  ASSERT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(server.requests()[1].connection, 0u);
  EXPECT_EQ(server.requests()[1].target, "/two");
  EXPECT_EQ(server.closed_by_client(), 0u);
}

TEST_F(HttpClientTest, NextRequestFromTheCallbackReusesTheConnection) {
  TestServer server(&loop_, [](const SeenRequest&) { return ok_reply(); });
  HttpClient client(&loop_);
  HttpClient::RequestHandle first;
  HttpClient::RequestHandle second;
  int done = 0;
  first = client.request(get(server.url("/a")), [&](HttpResult result) {
    EXPECT_TRUE(result.ok());
    ++done;
    first = {};  // dropping one's own handle in the callback is fine
    second = client.request(get(server.url("/b")), [&](HttpResult again) {
      EXPECT_TRUE(again.ok());
      ++done;
    });
  });
  ASSERT_TRUE(run_until([&] { return done == 2; }));
  EXPECT_EQ(server.accepted(), 1u);
}

TEST_F(HttpClientTest, ConnectionCloseIsHonoured) {
  TestServer server(&loop_, [](const SeenRequest&) {
    return Reply{response(200, "x", "Connection: close\r\n"), false, false, true};
  });
  HttpClient client(&loop_);
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  EXPECT_EQ(client.idle_connections(), 0u);
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  EXPECT_EQ(server.accepted(), 2u);
}

TEST_F(HttpClientTest, ShortServerKeepAliveTimeoutIsNotRaced) {
  TestServer server(&loop_, [](const SeenRequest&) {
    return Reply{response(200, "x", "Keep-Alive: timeout=1, max=100\r\n")};
  });
  HttpClient client(&loop_);
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  EXPECT_EQ(client.idle_connections(), 0u);
  EXPECT_TRUE(run_until([&] { return server.closed_by_client() == 1; }));
}

TEST_F(HttpClientTest, IdleConnectionsExpire) {
  TestServer server(&loop_, [](const SeenRequest&) { return ok_reply(); });
  HttpClientOptions options;
  options.idle_timeout = 30ms;
  HttpClient client(&loop_, options);
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  EXPECT_EQ(client.idle_connections(), 1u);
  EXPECT_TRUE(run_until([&] { return server.closed_by_client() == 1; }));
  EXPECT_EQ(client.idle_connections(), 0u);
}

TEST_F(HttpClientTest, IdleConnectionsAreCapped) {
  TestServer first(&loop_, [](const SeenRequest&) { return ok_reply(); });
  TestServer second(&loop_, [](const SeenRequest&) { return ok_reply(); });
  HttpClientOptions options;
  options.max_idle_connections = 1;
  HttpClient client(&loop_, options);
  ASSERT_TRUE(fetch(client, get(first.url("/"))).ok());
  ASSERT_TRUE(fetch(client, get(second.url("/"))).ok());
  EXPECT_EQ(client.idle_connections(), 1u);
  EXPECT_TRUE(run_until([&] { return first.closed_by_client() == 1; })) << "the oldest goes";
  EXPECT_EQ(second.closed_by_client(), 0u);
}

TEST_F(HttpClientTest, ServerClosingTheIdleConnectionRetiresIt) {
  TestServer server(&loop_, [](const SeenRequest&) {
    return Reply{response(200, "x"), false, false, true};
  });
  HttpClient client(&loop_);
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  EXPECT_TRUE(run_until([&] { return client.idle_connections() == 0; }));
}

TEST_F(HttpClientTest, NoReuseSendsConnectionClose) {
  TestServer server(&loop_, [](const SeenRequest&) { return ok_reply(); });
  HttpClientOptions options;
  options.max_idle_connections = 0;
  HttpClient client(&loop_, options);
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  EXPECT_EQ(server.requests().at(0).header("Connection"), "close");
  EXPECT_EQ(client.idle_connections(), 0u);
}

// The server closes a kept-alive connection just as the next request arrives.
Reply close_second_request(const SeenRequest& request) {
  if (request.index == 1) {
    return Reply{"", false, true, false};
  }
  return ok_reply();
}

TEST_F(HttpClientTest, StaleConnectionIsRetriedForGet) {
  TestServer server(&loop_, close_second_request);
  HttpClient client(&loop_);
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  const HttpResult result = fetch(client, get(server.url("/again")));
  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_EQ(server.accepted(), 2u);
  EXPECT_EQ(server.requests().back().target, "/again");
  EXPECT_EQ(server.requests().back().connection, 1u);
}

TEST_F(HttpClientTest, StaleConnectionIsNotRetriedForPost) {
  TestServer server(&loop_, close_second_request);
  HttpClient client(&loop_);
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  HttpRequest post = get(server.url("/token"));
  post.method = "POST";
  post.body = "code=once";
  const HttpResult result = fetch(client, std::move(post));
  EXPECT_EQ(result.error, HttpError::kProtocol) << result.error_text;
  EXPECT_EQ(server.accepted(), 1u) << "a POST is never sent twice";
}

// --- failures --------------------------------------------------------------------------

TEST_F(HttpClientTest, TimeoutWhenTheServerNeverAnswers) {
  TestServer server(&loop_, [](const SeenRequest&) { return Reply{"", true}; });
  HttpClient client(&loop_);
  HttpRequest request = get(server.url("/slow"));
  request.timeout = 100ms;
  const HttpResult result = fetch(client, std::move(request));
  EXPECT_EQ(result.error, HttpError::kTimeout) << result.error_text;
  EXPECT_EQ(server.requests().size(), 1u);
  EXPECT_TRUE(run_until([&] { return server.closed_by_client() == 1; }))
      << "the timed-out connection is closed, not pooled";
  EXPECT_EQ(client.idle_connections(), 0u);
  EXPECT_EQ(client.active_requests(), 0u);
}

TEST_F(HttpClientTest, ConnectionRefused) {
  HttpClient client(&loop_);
  const HttpResult result =
      fetch(client, get("http://127.0.0.1:" + std::to_string(closed_port()) + "/"));
  EXPECT_EQ(result.error, HttpError::kConnect) << result.error_text;
  EXPECT_NE(result.error_text.find("refused"), std::string::npos) << result.error_text;
}

TEST_F(HttpClientTest, ResponseTooLarge) {
  TestServer server(&loop_, [](const SeenRequest& request) {
    if (request.target == "/length") {
      return Reply{response(200, std::string(4096, 'x'))};
    }
    if (request.target == "/headers") {
      return Reply{response(200, "", "X-Big: " + std::string(2048, 'h') + "\r\n")};
    }
    std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 8; ++i) {
      chunked += "100\r\n" + std::string(256, 'c') + "\r\n";
    }
    return Reply{chunked + "0\r\n\r\n"};
  });
  HttpClientOptions options;
  options.max_response_body_bytes = 1024;
  options.max_response_header_bytes = 1024;
  HttpClient client(&loop_, options);
  for (const char* path : {"/length", "/chunked", "/headers"}) {
    const HttpResult result = fetch(client, get(server.url(path)));
    EXPECT_EQ(result.error, HttpError::kTooLarge) << path << ": " << result.error_text;
    EXPECT_TRUE(result.body.empty());
  }
  EXPECT_EQ(client.idle_connections(), 0u);
}

TEST_F(HttpClientTest, MalformedResponseIsAProtocolError) {
  TestServer server(&loop_, [](const SeenRequest&) { return Reply{"SMTP ready\r\n\r\n"}; });
  HttpClient client(&loop_);
  const HttpResult result = fetch(client, get(server.url("/")));
  EXPECT_EQ(result.error, HttpError::kProtocol) << result.error_text;
}

TEST_F(HttpClientTest, TruncatedResponseIsAProtocolError) {
  TestServer server(&loop_, [](const SeenRequest&) {
    return Reply{"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", false, false, true};
  });
  HttpClient client(&loop_);
  const HttpResult result = fetch(client, get(server.url("/")));
  EXPECT_EQ(result.error, HttpError::kProtocol) << result.error_text;
}

TEST_F(HttpClientTest, ExtraBytesAfterTheResponseDoNotGetPooled) {
  TestServer server(&loop_, [](const SeenRequest&) {
    return Reply{response(200, "x") + response(200, "unasked")};
  });
  HttpClient client(&loop_);
  const HttpResult result = fetch(client, get(server.url("/")));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.body, "x");
  EXPECT_EQ(client.idle_connections(), 0u);
}

TEST_F(HttpClientTest, InvalidRequestsFailOnALaterTurn) {
  HttpClient client(&loop_);
  std::vector<HttpRequest> requests;
  requests.push_back(get("mailto:someone"));
  requests.push_back(get("http://user:pw@host/"));
  HttpRequest injected = get("http://127.0.0.1:1/");
  injected.headers = {{"X-Evil", "a\r\nAuth-Status: OK"}};
  requests.push_back(injected);
  HttpRequest bad_name = get("http://127.0.0.1:1/");
  bad_name.headers = {{"Bad Name", "v"}};
  requests.push_back(bad_name);
  HttpRequest framing = get("http://127.0.0.1:1/");
  framing.headers = {{"content-length", "5"}};
  requests.push_back(framing);
  HttpRequest method = get("http://127.0.0.1:1/");
  method.method = "GET /x";
  requests.push_back(method);
  for (HttpRequest& request : requests) {
    const std::string url = request.url;
    const HttpResult result = fetch(client, std::move(request));
    EXPECT_EQ(result.error, HttpError::kInvalidRequest) << url << ": " << result.error_text;
    EXPECT_FALSE(result.error_text.empty());
  }
}

// --- TLS -------------------------------------------------------------------------------

TEST_F(HttpClientTest, HttpsVerifiesTheNameAndSendsSni) {
  TestPki pki;
  SslCtxPtr tls = pki.server_context("DNS:localhost");
  TestServer server(
      &loop_, [](const SeenRequest&) { return ok_reply("secure"); }, tls.get(),
      localhost_address());
  HttpClientOptions options;
  options.ca_file = pki.ca_file();
  HttpClient client(&loop_, options);
  ASSERT_EQ(client.tls_error(), "");
  const HttpResult result = fetch(client, get(server.url("/token", "localhost")));
  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_EQ(result.body, "secure");
  EXPECT_EQ(server.server_names, std::vector<std::string>{"localhost"});
  EXPECT_EQ(server.requests().at(0).header("Host"), "localhost:" + std::to_string(server.port()));
}

TEST_F(HttpClientTest, HttpsToAnIpAddressAndKeepAlive) {
  TestPki pki;
  SslCtxPtr tls = pki.server_context("IP:127.0.0.1");
  TestServer server(
      &loop_, [](const SeenRequest&) { return ok_reply(); }, tls.get());
  HttpClientOptions options;
  options.ca_file = pki.ca_file();
  HttpClient client(&loop_, options);
  ASSERT_TRUE(fetch(client, get(server.url("/1"))).ok());
  const HttpResult second = fetch(client, get(server.url("/2")));
  ASSERT_TRUE(second.ok()) << second.error_text;
  EXPECT_EQ(server.accepted(), 1u) << "the TLS connection was reused";
  EXPECT_EQ(server.requests().size(), 2u);
  EXPECT_TRUE(server.server_names.empty()) << "no SNI for an IP address (RFC 6066)";
}

TEST_F(HttpClientTest, HttpsWrongHostNameFails) {
  TestPki pki;
  SslCtxPtr tls = pki.server_context("DNS:wrong.example,IP:192.0.2.1");
  TestServer server(
      &loop_, [](const SeenRequest&) { return ok_reply(); }, tls.get(), localhost_address());
  HttpClientOptions options;
  options.ca_file = pki.ca_file();
  HttpClient client(&loop_, options);
  const HttpResult by_name = fetch(client, get(server.url("/", "localhost")));
  EXPECT_EQ(by_name.error, HttpError::kTls) << by_name.error_text;
  EXPECT_NE(by_name.error_text.find("certificate"), std::string::npos) << by_name.error_text;
  EXPECT_TRUE(server.requests().empty()) << "nothing was sent to the impostor";
}

TEST_F(HttpClientTest, HttpsUntrustedCaFails) {
  TestPki pki;
  TestPki other;
  SslCtxPtr tls = pki.server_context("IP:127.0.0.1");
  TestServer server(
      &loop_, [](const SeenRequest&) { return ok_reply(); }, tls.get());
  HttpClientOptions options;
  options.ca_file = other.ca_file();
  HttpClient client(&loop_, options);
  const HttpResult result = fetch(client, get(server.url("/")));
  EXPECT_EQ(result.error, HttpError::kTls) << result.error_text;
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(HttpClientTest, HttpsWithoutVerificationForTests) {
  TestPki pki;
  SslCtxPtr tls = pki.server_context("DNS:wrong.example");
  TestServer server(
      &loop_, [](const SeenRequest&) { return ok_reply(); }, tls.get());
  HttpClientOptions options;
  options.ca_file = "/nonexistent";
  options.verify_certificate = false;
  HttpClient client(&loop_, options);
  EXPECT_EQ(client.tls_error(), "");
  const HttpResult result = fetch(client, get(server.url("/")));
  EXPECT_TRUE(result.ok()) << result.error_text;
}

TEST_F(HttpClientTest, MissingCaFileFailsHttpsOnly) {
  TestServer server(&loop_, [](const SeenRequest&) { return ok_reply(); });
  HttpClientOptions options;
  options.ca_file = "/nonexistent/ca.pem";
  HttpClient client(&loop_, options);
  EXPECT_NE(client.tls_error().find("/nonexistent/ca.pem"), std::string::npos);
  const HttpResult https = fetch(client, get("https://127.0.0.1:1/"));
  EXPECT_EQ(https.error, HttpError::kTls);
  EXPECT_TRUE(fetch(client, get(server.url("/"))).ok());
}

// --- cancellation and lifetimes --------------------------------------------------------

TEST_F(HttpClientTest, CancelBeforeTheRequestStarts) {
  TestServer server(&loop_, [](const SeenRequest&) { return ok_reply(); });
  HttpClient client(&loop_);
  bool cancelled_ran = false;
  {
    HttpClient::RequestHandle handle =
        client.request(get(server.url("/never")), [&](HttpResult) { cancelled_ran = true; });
    EXPECT_TRUE(handle.pending());
  }  // dropped at once
  EXPECT_EQ(client.active_requests(), 0u);
  ASSERT_TRUE(fetch(client, get(server.url("/later"))).ok());
  EXPECT_FALSE(cancelled_ran);
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(server.requests()[0].target, "/later");
}

TEST_F(HttpClientTest, CancelMidRequestClosesAndNeverCallsBack) {
  TestServer server(&loop_, [](const SeenRequest&) { return Reply{"", true}; });
  HttpClient client(&loop_);
  bool ran = false;
  HttpClient::RequestHandle handle =
      client.request(get(server.url("/slow")), [&](HttpResult) { ran = true; });
  ASSERT_TRUE(run_until([&] { return server.requests().size() == 1; }));
  handle.cancel();
  EXPECT_FALSE(handle.pending());
  EXPECT_TRUE(run_until([&] { return server.closed_by_client() == 1; }));
  EXPECT_FALSE(ran);
  EXPECT_EQ(client.active_requests(), 0u);
  EXPECT_EQ(client.idle_connections(), 0u);
}

TEST_F(HttpClientTest, CancelWhileResolving) {
  TestServer server(&loop_, [](const SeenRequest&) { return ok_reply(); });
  HttpClient client(&loop_);
  bool ran = false;
  HttpClient::RequestHandle handle =
      client.request(get("http://localhost:1/"), [&](HttpResult) { ran = true; });
  // One turn: the request starts and the look-up goes to the thread pool.
  uv_run(&loop_, UV_RUN_NOWAIT);
  handle = {};
  // Several more turns, long enough for the look-up to come back.
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  EXPECT_FALSE(ran);
}

TEST_F(HttpClientTest, ReassigningAHandleCancelsTheOldRequest) {
  TestServer server(&loop_, [](const SeenRequest&) { return ok_reply(); });
  HttpClient client(&loop_);
  int first = 0;
  int second = 0;
  HttpClient::RequestHandle handle =
      client.request(get(server.url("/1")), [&](HttpResult) { ++first; });
  handle = client.request(get(server.url("/2")), [&](HttpResult) { ++second; });
  ASSERT_TRUE(run_until([&] { return second == 1; }));
  EXPECT_EQ(first, 0);
  EXPECT_FALSE(handle.pending());
}

TEST_F(HttpClientTest, DestroyingTheClientDropsCallbacks) {
  TestServer server(&loop_, [](const SeenRequest&) { return Reply{"", true}; });
  auto client = std::make_unique<HttpClient>(&loop_);
  bool ran = false;
  HttpClient::RequestHandle handle =
      client->request(get(server.url("/slow")), [&](HttpResult) { ran = true; });
  HttpClient::RequestHandle queued =
      client->request(get(server.url("/queued")), [&](HttpResult) { ran = true; });
  ASSERT_TRUE(run_until([&] { return server.requests().size() == 2; }));
  client.reset();
  EXPECT_FALSE(handle.pending());
  EXPECT_TRUE(run_until([&] { return server.closed_by_client() == 2; }));
  EXPECT_FALSE(ran);
  // The handles outlive the client; dropping them now is harmless.
}

TEST_F(HttpClientTest, CallbacksThatOwnHandlesDieSafely) {
  // A callback may own (through its session) the handle of another request: destroying
  // the callback, when the client goes or a request is cancelled, cancels that one
  // re-entrantly. Here each callback owns the next request's handle, in a ring.
  TestServer server(&loop_, [](const SeenRequest&) { return Reply{"", true}; });
  auto client = std::make_unique<HttpClient>(&loop_);
  std::vector<std::shared_ptr<HttpClient::RequestHandle>> handles;
  for (int i = 0; i < 6; ++i) {
    handles.push_back(std::make_shared<HttpClient::RequestHandle>());
  }
  for (std::size_t i = 0; i < handles.size(); ++i) {
    *handles[i] = client->request(get(server.url("/slow")),
                                  [next = handles[(i + 1) % handles.size()]](HttpResult) {});
  }
  ASSERT_TRUE(run_until([&] { return server.requests().size() == handles.size(); }));
  std::shared_ptr<HttpClient::RequestHandle> first = handles[0];
  handles.clear();
  first->cancel();  // drops its callback, which cancels request 1, and so on round
  EXPECT_EQ(client->active_requests(), 0u);
  first.reset();

  for (int i = 0; i < 6; ++i) {
    handles.push_back(std::make_shared<HttpClient::RequestHandle>());
  }

  for (std::size_t i = 0; i < handles.size(); ++i) {
    *handles[i] = client->request(get(server.url("/slow")),
                                  [next = handles[(i + 1) % handles.size()]](HttpResult) {});
  }
  ASSERT_TRUE(run_until([&] { return server.requests().size() == 12; }));
  handles.clear();  // now only the callbacks own the handles
  client.reset();
  EXPECT_TRUE(run_until([&] { return server.closed_by_client() == 12; }));
}

}  // namespace
}  // namespace popbridge::proxy
