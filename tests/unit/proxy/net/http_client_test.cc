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

#include "tests/support/http_test_server.h"

namespace popbridge::proxy {
namespace {

using namespace std::chrono_literals;
using namespace http_testing;

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

TEST_F(HttpClientTest, StaleConnectionIsRetriedForAPostMarkedSafe) {
  TestServer server(&loop_, close_second_request);
  HttpClient client(&loop_);
  ASSERT_TRUE(fetch(client, get(server.url("/"))).ok());
  HttpRequest post = get(server.url("/jmap/api/"));
  post.method = "POST";
  post.body = R"({"methodCalls": []})";
  post.retry_safe = true;
  const HttpResult result = fetch(client, std::move(post));
  ASSERT_TRUE(result.ok()) << result.error_text;
  EXPECT_EQ(server.accepted(), 2u);
  EXPECT_EQ(server.requests().back().body, R"({"methodCalls": []})");
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
