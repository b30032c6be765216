// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>
#include <stdlib.h>

#include "proxy/net/http_client.h"

namespace popbridge::proxy {
namespace {

HttpUrl url(const std::string& text) {
  std::string error;
  std::optional<HttpUrl> parsed = parse_http_url(text, error);
  EXPECT_TRUE(parsed) << error;
  return parsed.value_or(HttpUrl{});
}

// Sets the proxy variables for one test and restores a clean environment after it.
class ProxyEnvironmentTest : public testing::Test {
 protected:
  void TearDown() override {
    for (const char* name :
         {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"}) {
      unsetenv(name);
    }
  }
};

TEST_F(ProxyEnvironmentTest, ReadsEachSchemesProxyAndNoProxy) {
  TearDown();
  setenv("https_proxy", "proxy.corp:3128", 1);  // no scheme, as curl accepts it
  setenv("HTTP_PROXY", "http://10.0.0.1:8080/", 1);
  setenv("no_proxy", " .Internal.example , localhost:8080,[::1]:9000,10.1.2.3", 1);
  std::vector<std::string> problems;
  const HttpProxy proxy = proxy_from_environment(problems);
  EXPECT_TRUE(problems.empty());
  ASSERT_TRUE(proxy.for_https);
  EXPECT_EQ(proxy.for_https->host, "proxy.corp");
  EXPECT_EQ(proxy.for_https->port, 3128);
  ASSERT_TRUE(proxy.for_http);
  EXPECT_EQ(proxy.for_http->host, "10.0.0.1");
  EXPECT_EQ(proxy.no_proxy,
            (std::vector<std::string>{"internal.example", "localhost", "::1", "10.1.2.3"}));

  EXPECT_EQ(proxy.for_url(url("https://login.microsoftonline.com/t/token")), &*proxy.for_https);
  EXPECT_EQ(proxy.for_url(url("http://hook.example.com/auth")), &*proxy.for_http);
  EXPECT_EQ(proxy.for_url(url("http://auth.internal.example/x")), nullptr) << "a domain suffix";
  EXPECT_EQ(proxy.for_url(url("http://internal.example/x")), nullptr) << "the domain itself";
  EXPECT_NE(proxy.for_url(url("http://notinternal.example/x")), nullptr) << "not a label boundary";
  EXPECT_EQ(proxy.for_url(url("http://localhost:9000/auth")), nullptr) << "every port of the host";
  EXPECT_EQ(proxy.for_url(url("https://[::1]:8443/")), nullptr);
  EXPECT_EQ(proxy.for_url(url("http://10.1.2.3/")), nullptr);
}

TEST_F(ProxyEnvironmentTest, UnusableProxiesAreReportedAndIgnored) {
  TearDown();
  setenv("HTTPS_PROXY", "https://proxy.corp:3128", 1);
  setenv("HTTP_PROXY", "http://user:secret@proxy.corp:3128", 1);
  std::vector<std::string> problems;
  const HttpProxy proxy = proxy_from_environment(problems);
  EXPECT_FALSE(proxy.for_https);
  EXPECT_FALSE(proxy.for_http);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_NE(problems[0].find("HTTP_PROXY"), std::string::npos);
  EXPECT_EQ(problems[0].find("secret"), std::string::npos) << "never the credentials";
  EXPECT_NE(problems[1].find("only http:// proxies"), std::string::npos);
}

TEST_F(ProxyEnvironmentTest, StarSendsEverythingDirect) {
  TearDown();
  setenv("HTTPS_PROXY", "http://proxy.corp:3128", 1);
  setenv("NO_PROXY", "*", 1);
  std::vector<std::string> problems;
  const HttpProxy proxy = proxy_from_environment(problems);
  EXPECT_EQ(proxy.for_url(url("https://login.microsoftonline.com/")), nullptr);
  EXPECT_EQ(HttpProxy{}.for_url(url("https://login.microsoftonline.com/")), nullptr)
      << "no proxy configured";
}

}  // namespace
}  // namespace popbridge::proxy
