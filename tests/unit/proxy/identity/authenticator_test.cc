// SPDX-License-Identifier: Apache-2.0
// auth.mode x upstream.login.mode: what the Authenticator decides for each combination
// that needs no network (the hook and the token endpoint have their own tests, and the
// integration suite runs them against real servers).
#include "proxy/identity/authenticator.h"

#include <crypt.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <chrono>

#include "proxy/base/deferred_delete.h"

namespace popbridge::proxy {
namespace {

using Mechanism = UpstreamCredentials::Mechanism;

class AuthenticatorTest : public ::testing::Test {
 protected:
  AuthenticatorTest() {
    uv_loop_init(&loop_);
    deferred_delete_ = std::make_unique<DeferredDelete>(&loop_);
    metrics_ = std::make_unique<metrics::Metrics>(registry_, std::vector<std::string>{"pop3"},
                                                  std::vector<std::string_view>{"USER"}, "test",
                                                  "test", "test");
    // SHA-512 crypt: quick enough for a test, and what many old users files hold.
    identity_.password_hashes["alice"] = ::crypt("right", "$6$popbridgetest$");
    identity_.slowest_hash = identity_.password_hashes["alice"];
    identity_.master_password = protocol::Secret("master-secret");
    identity_.mapped["alice"] = Identity::Mapping{"alice@backend", protocol::Secret("mapped")};
  }
  ~AuthenticatorTest() override {
    deferred_delete_.reset();
    while (uv_loop_alive(&loop_) != 0) {
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    uv_loop_close(&loop_);
  }

  // Runs one login to its outcome (or a 10 s deadline, which fails the test).
  std::optional<Authenticator::Outcome> run(LoginAttempt attempt) {
    Authenticator authenticator(&loop_, config_, identity_, nullptr, nullptr, *metrics_, "1");
    std::optional<Authenticator::Outcome> outcome;
    authenticator.authenticate(std::move(attempt),
                               [&](Authenticator::Outcome got) { outcome = std::move(got); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!outcome && std::chrono::steady_clock::now() < deadline) {
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    EXPECT_TRUE(outcome.has_value()) << "no outcome";
    return outcome;
  }
  static LoginAttempt attempt(std::string user, std::string secret) {
    LoginAttempt login;
    login.user = std::move(user);
    login.secret = protocol::Secret(secret);
    return login;
  }

  uv_loop_t loop_{};
  std::unique_ptr<DeferredDelete> deferred_delete_;
  prometheus::Registry registry_;
  std::unique_ptr<metrics::Metrics> metrics_;
  config::Config config_;
  Identity identity_;
};

TEST_F(AuthenticatorTest, PassthroughHandsTheClientsCredentialsOn) {
  LoginAttempt login = attempt("bob", "token-xyz");
  login.mechanism = Mechanism::kXoauth2;
  auto outcome = run(std::move(login));
  ASSERT_TRUE(outcome && std::holds_alternative<LoginPlan>(*outcome));
  const LoginPlan& plan = std::get<LoginPlan>(*outcome);
  EXPECT_EQ(plan.credentials.user, "bob");
  EXPECT_EQ(plan.credentials.secret.view(), "token-xyz");
  EXPECT_EQ(plan.credentials.mechanism, Mechanism::kXoauth2);
  EXPECT_TRUE(plan.credentials.authzid.empty());
  EXPECT_FALSE(plan.route);
}

TEST_F(AuthenticatorTest, EmptyPasswordIsRefusedWithoutAsking) {
  auto outcome = run(attempt("bob", ""));
  ASSERT_TRUE(outcome && std::holds_alternative<LoginRefusal>(*outcome));
  EXPECT_EQ(std::get<LoginRefusal>(*outcome).kind, LoginRefusal::Kind::kBadCredentials);
}

TEST_F(AuthenticatorTest, UsersFileWithMasterLogin) {
  config_.auth.mode = config::AuthMode::kUsersFile;
  config_.upstream.login.mode = config::UpstreamLoginMode::kMaster;
  config_.upstream.login.master_user = "popbridge-master";
  auto outcome = run(attempt("alice", "right"));
  ASSERT_TRUE(outcome && std::holds_alternative<LoginPlan>(*outcome));
  const UpstreamCredentials& credentials = std::get<LoginPlan>(*outcome).credentials;
  EXPECT_EQ(credentials.authzid, "alice");
  EXPECT_EQ(credentials.user, "popbridge-master");
  EXPECT_EQ(credentials.secret.view(), "master-secret");
  EXPECT_EQ(credentials.mechanism, Mechanism::kPassword);
}

TEST_F(AuthenticatorTest, UsersFileRefusesAWrongPasswordAndAnUnknownUser) {
  config_.auth.mode = config::AuthMode::kUsersFile;
  config_.upstream.login.mode = config::UpstreamLoginMode::kMaster;
  for (auto [user, password] : {std::pair{"alice", "wrong"}, std::pair{"mallory", "right"}}) {
    auto outcome = run(attempt(user, password));
    ASSERT_TRUE(outcome && std::holds_alternative<LoginRefusal>(*outcome)) << user;
    EXPECT_EQ(std::get<LoginRefusal>(*outcome).kind, LoginRefusal::Kind::kBadCredentials);
  }
}

TEST_F(AuthenticatorTest, MappedLoginUsesTheMappedAccountOrRefusesPermanently) {
  config_.auth.mode = config::AuthMode::kUsersFile;
  config_.upstream.login.mode = config::UpstreamLoginMode::kMapped;
  auto outcome = run(attempt("alice", "right"));
  ASSERT_TRUE(outcome && std::holds_alternative<LoginPlan>(*outcome));
  EXPECT_EQ(std::get<LoginPlan>(*outcome).credentials.user, "alice@backend");
  EXPECT_EQ(std::get<LoginPlan>(*outcome).credentials.secret.view(), "mapped");

  identity_.mapped.clear();
  outcome = run(attempt("alice", "right"));
  ASSERT_TRUE(outcome && std::holds_alternative<LoginRefusal>(*outcome));
  EXPECT_EQ(std::get<LoginRefusal>(*outcome).kind, LoginRefusal::Kind::kPermanent);
  EXPECT_FALSE(std::get<LoginRefusal>(*outcome).text.empty());
}

TEST_F(AuthenticatorTest, CancelledCheckNeverCallsBack) {
  config_.auth.mode = config::AuthMode::kUsersFile;
  bool called = false;
  {
    Authenticator authenticator(&loop_, config_, identity_, nullptr, nullptr, *metrics_, "1");
    authenticator.authenticate(attempt("alice", "right"),
                               [&](Authenticator::Outcome) { called = true; });
    authenticator.cancel();
    // The check already on the thread pool finishes; its answer must go nowhere.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (uv_loop_alive(&loop_) != 0 && std::chrono::steady_clock::now() < deadline) {
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
  }
  EXPECT_FALSE(called);
}

}  // namespace
}  // namespace popbridge::proxy
