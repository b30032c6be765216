// SPDX-License-Identifier: Apache-2.0
// The auth_http protocol, as nginx's mail proxy speaks it (ngx_mail_auth_http_module):
// the request headers popbridge sends and how it reads every kind of answer.
#include "proxy/identity/auth_hook.h"

#include <gtest/gtest.h>

namespace popbridge::proxy {
namespace {

using Verdict = HookAnswer::Verdict;

std::string header(const HttpRequest& request, std::string_view name) {
  for (const auto& field : request.headers) {
    if (field.name == name) {
      return field.value;
    }
  }
  return "<absent>";
}

HttpResult answer(std::vector<protocol::HttpHeader> headers, int status = 200) {
  HttpResult result;
  result.status = status;
  result.headers = std::move(headers);
  return result;
}

class AuthHookTest : public ::testing::Test {
 protected:
  AuthHookTest() {
    settings_.url = "http://127.0.0.1:9000/auth";
    settings_.timeout = std::chrono::seconds(3);
    upstream_.address = {"imap.internal", 993};
    upstream_.tls = config::TlsMode::kImplicit;
    upstream_.server_name = "imap.internal";
  }
  HookAnswer read(const HttpResult& result) {
    return read_auth_hook_answer(result, settings_, upstream_);
  }
  config::HttpAuth settings_;
  config::Upstream upstream_;
};

TEST_F(AuthHookTest, RequestCarriesNginxHeadersWithEscapedCredentials) {
  const HttpRequest request = auth_hook_request(
      settings_,
      HookQuestion{"jo smith%", protocol::Secret("p\xe4ss word\t"), 2, "192.0.2.7", true});
  EXPECT_EQ(request.url, "http://127.0.0.1:9000/auth");
  EXPECT_EQ(request.timeout, std::chrono::milliseconds(3000));
  EXPECT_EQ(header(request, "Auth-Method"), "plain");
  EXPECT_EQ(header(request, "Auth-User"), "jo%20smith%25");
  EXPECT_EQ(header(request, "Auth-Pass"), "p%E4ss%20word%09");
  EXPECT_EQ(header(request, "Auth-Protocol"), "pop3");
  EXPECT_EQ(header(request, "Auth-Login-Attempt"), "2");
  EXPECT_EQ(header(request, "Client-IP"), "192.0.2.7");
  EXPECT_EQ(header(request, "Auth-SSL"), "on");
}

TEST_F(AuthHookTest, OkWithoutRouteKeepsTheConfiguredUpstream) {
  const HookAnswer got = read(answer({{"Auth-Status", "OK"}}));
  EXPECT_EQ(got.verdict, Verdict::kAllow);
  EXPECT_FALSE(got.route);
  EXPECT_FALSE(got.mailbox);
  EXPECT_FALSE(got.credentials);
}

TEST_F(AuthHookTest, OkWithRouteMailboxAndCredentials) {
  const HookAnswer got = read(answer({{"Auth-Status", "OK"},
                                      {"Auth-Server", "10.0.0.5"},
                                      {"Auth-Port", "143"},
                                      {"X-Popbridge-Upstream-TLS", "starttls"},
                                      {"X-Popbridge-Mailbox", "Archive"},
                                      {"Auth-User", "jo@backend"},
                                      {"Auth-Pass", "backend-secret"}}));
  ASSERT_EQ(got.verdict, Verdict::kAllow);
  ASSERT_TRUE(got.route);
  EXPECT_EQ(got.route->address.host, "10.0.0.5");
  EXPECT_EQ(got.route->address.port, 143);
  EXPECT_EQ(got.route->tls, config::TlsMode::kStartTls);
  EXPECT_EQ(got.route->server_name, "imap.internal") << "an IP keeps the configured name";
  EXPECT_EQ(got.mailbox, "Archive");
  ASSERT_TRUE(got.credentials);
  EXPECT_EQ(got.credentials->user, "jo@backend");
  EXPECT_EQ(got.credentials->secret.view(), "backend-secret");
}

TEST_F(AuthHookTest, RouteToAHostNameChecksThatName) {
  settings_.route_tls = config::TlsMode::kNone;
  const HookAnswer got = read(answer({{"Auth-Status", "OK"}, {"Auth-Server", "mx2.internal"}}));
  ASSERT_TRUE(got.route);
  EXPECT_EQ(got.route->server_name, "mx2.internal");
  EXPECT_EQ(got.route->address.port, 993) << "no Auth-Port: the configured port";
  EXPECT_EQ(got.route->tls, config::TlsMode::kNone) << "auth.http.route_tls";
}

TEST_F(AuthHookTest, UnusableRouteIsAFailureNotALogin) {
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{{"Auth-Port", "http"},
                                                        {"Auth-Port", "0"},
                                                        {"Auth-Port", "70000"},
                                                        {"X-Popbridge-Upstream-TLS", "yes"}}) {
    const HookAnswer got =
        read(answer({{"Auth-Status", "OK"}, {"Auth-Server", "10.0.0.5"}, {name, value}}));
    EXPECT_EQ(got.verdict, Verdict::kFailed) << name << ": " << value;
    EXPECT_FALSE(got.problem.empty());
  }
}

TEST_F(AuthHookTest, DenyCarriesPrintableTextAndBoundedWait) {
  const HookAnswer got =
      read(answer({{"Auth-Status", "Account locked\r\n+OK forged"}, {"Auth-Wait", "3600"}}));
  EXPECT_EQ(got.verdict, Verdict::kDeny);
  EXPECT_EQ(got.client_text, "Account locked+OK forged") << "no line break reaches the client";
  EXPECT_EQ(got.wait, std::chrono::seconds(60));
  EXPECT_EQ(read(answer({{"Auth-Status", std::string(500, 'x')}})).client_text.size(), 200u);
}

TEST_F(AuthHookTest, NoUsableAnswerIsAFailure) {
  EXPECT_EQ(read(answer({{"Auth-Status", "OK"}}, 500)).verdict, Verdict::kFailed);
  EXPECT_EQ(read(answer({{"Content-Type", "text/plain"}})).verdict, Verdict::kFailed);
  HttpResult timed_out;
  timed_out.error = HttpError::kTimeout;
  timed_out.error_text = "no answer in 5s";
  const HookAnswer got = read(timed_out);
  EXPECT_EQ(got.verdict, Verdict::kFailed);
  EXPECT_NE(got.problem.find("no answer in 5s"), std::string::npos);
}

TEST_F(AuthHookTest, HalfCredentialsAreIgnored) {
  const HookAnswer got = read(answer({{"Auth-Status", "OK"}, {"Auth-User", "only-user"}}));
  EXPECT_EQ(got.verdict, Verdict::kAllow);
  EXPECT_FALSE(got.credentials);
}

}  // namespace
}  // namespace popbridge::proxy
