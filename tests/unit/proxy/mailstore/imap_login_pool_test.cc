// SPDX-License-Identifier: Apache-2.0
// upstream.login_reuse's pool with real connections: ImapClients logged in to a scripted
// server on loopback, parked and taken on this test's loop. The lifetime cases (a kept
// connection's expiry and its connection's end in one loop turn, a connection dropped
// while kept) are deterministic here, which they are not against Dovecot; the sanitizer
// build runs them too.
#include "proxy/mailstore/imap/imap_login_pool.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <uv.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "metrics/metrics.h"
#include "proxy/base/deferred_delete.h"
#include "tests/support/scripted_imap_server.h"

namespace popbridge::proxy {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::seconds;

struct QuietObserver : ImapClient::Observer {
  void on_upstream_lost(const ImapResult&) override { ++lost; }
  int lost = 0;
};

UpstreamCredentials password(std::string user, std::string_view secret) {
  UpstreamCredentials credentials;
  credentials.user = std::move(user);
  credentials.secret = protocol::Secret(secret);
  return credentials;
}

class ImapLoginPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    deferred_ = std::make_unique<DeferredDelete>(&loop_);
    metrics_ = std::make_unique<metrics::Metrics>(registry_, std::vector<std::string>{"pop3"},
                                                  std::vector<std::string_view>{"USER"}, "test",
                                                  "test", "test");
    settings_.address = {"127.0.0.1", server_.port()};
    settings_.tls = config::TlsMode::kNone;
    settings_.login_reuse.idle = seconds(60);
    settings_.login_reuse.max_age = hours(1);
    settings_.login_reuse.max = 8;
  }

  void TearDown() override {
    pool_.reset();  // logs out what is kept
    clients_.clear();
    deferred_.reset();
    const auto give_up = std::chrono::steady_clock::now() + seconds(10);
    while (uv_loop_alive(&loop_) != 0 && std::chrono::steady_clock::now() < give_up) {
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a libuv handle was left open";
  }

  ImapLoginPool& pool() {
    if (!pool_) {
      pool_ = std::make_unique<ImapLoginPool>(&loop_, settings_, *metrics_);
    }
    return *pool_;
  }

  template <typename Condition>
  bool run_until(Condition condition, milliseconds deadline = seconds(10)) {
    const auto give_up = std::chrono::steady_clock::now() + deadline;
    while (!condition()) {
      if (std::chrono::steady_clock::now() >= give_up) {
        return false;
      }
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    return true;
  }

  // A connection logged in as `credentials`, idle: what a session leaves at its end.
  std::unique_ptr<ImapClient> logged_in(const UpstreamCredentials& credentials) {
    auto client = std::make_unique<ImapClient>(&loop_, settings_, nullptr, observer_);
    std::optional<ImapResult> connected, login;
    client->connect([&](const ImapResult& result) {
      connected = result;
      if (result.ok()) {
        client->login(credentials, [&](const ImapResult& answer) { login = answer; });
      }
    });
    EXPECT_TRUE(run_until([&] { return login.has_value() || (connected && !connected->ok()); }));
    EXPECT_TRUE(login && login->ok()) << (connected ? connected->text : "no connection");
    EXPECT_TRUE(client->idle());
    return client;
  }

  // The connection goes back to a session's owner, which ends it as a session does.
  void keep(std::unique_ptr<ImapClient> client) {
    client->set_observer(observer_);
    clients_.push_back(std::move(client));
  }

  double parked_gauge() { return metrics_->upstream_connections_parked.Value(); }
  double reused_counter() { return metrics_->upstream_logins_reused.Value(); }

  testing::ScriptedImapServer server_;
  uv_loop_t loop_{};
  std::unique_ptr<DeferredDelete> deferred_;
  prometheus::Registry registry_;
  std::unique_ptr<metrics::Metrics> metrics_;
  config::Upstream settings_;
  QuietObserver observer_;
  std::unique_ptr<ImapLoginPool> pool_;
  std::vector<std::unique_ptr<ImapClient>> clients_;
};

TEST_F(ImapLoginPoolTest, OnlyTheSamePasswordTakesTheKeptConnection) {
  const UpstreamCredentials alice = password("alice", "right");
  const std::optional<LoginKey> key = pool().key_for(alice);
  ASSERT_TRUE(key);
  EXPECT_EQ(key->digest.find("right"), std::string::npos);
  std::unique_ptr<ImapClient> client = logged_in(alice);
  ImapClient* kept = client.get();
  pool().park(*key, std::move(client));
  EXPECT_EQ(pool().size(), 1u);
  EXPECT_EQ(parked_gauge(), 1);

  EXPECT_EQ(pool().take(*pool().key_for(password("alice", "wrong"))), nullptr);
  EXPECT_EQ(pool().take(*pool().key_for(password("bob", "right"))), nullptr);
  UpstreamCredentials master = password("alice", "right");
  master.authzid = "carol";  // a master login acting for another user
  EXPECT_EQ(pool().take(*pool().key_for(master)), nullptr);
  EXPECT_EQ(pool().size(), 1u);

  std::unique_ptr<ImapClient> taken = pool().take(*pool().key_for(alice));
  EXPECT_EQ(taken.get(), kept);
  EXPECT_EQ(pool().size(), 0u);
  EXPECT_EQ(parked_gauge(), 0);
  EXPECT_EQ(reused_counter(), 1);
  EXPECT_EQ(server_.logins_now(), 1);
  keep(std::move(taken));
}

TEST_F(ImapLoginPoolTest, TokensAreNeverKept) {
  UpstreamCredentials token = password("alice", "ya29.token");
  token.mechanism = UpstreamCredentials::Mechanism::kXoauth2;
  EXPECT_FALSE(pool().key_for(token));
  token.mechanism = UpstreamCredentials::Mechanism::kOauthbearer;
  EXPECT_FALSE(pool().key_for(token));
}

TEST_F(ImapLoginPoolTest, TheOldestIsLoggedOutToMakeRoomAndANewerOneReplacesTheSameUsers) {
  settings_.login_reuse.max = 2;
  for (const char* user : {"u1", "u2", "u3"}) {
    const UpstreamCredentials credentials = password(user, "pw");
    pool().park(*pool().key_for(credentials), logged_in(credentials));
  }
  EXPECT_EQ(pool().size(), 2u);
  EXPECT_TRUE(run_until([&] { return server_.logouts_now() == 1; }));
  EXPECT_EQ(pool().take(*pool().key_for(password("u1", "pw"))), nullptr);

  const UpstreamCredentials u2 = password("u2", "pw");
  pool().park(*pool().key_for(u2), logged_in(u2));  // u2's second session ends
  EXPECT_EQ(pool().size(), 2u);
  EXPECT_TRUE(run_until([&] { return server_.logouts_now() == 2; }));
  EXPECT_EQ(parked_gauge(), 2);
}

TEST_F(ImapLoginPoolTest, AKeptConnectionIsLoggedOutWhenIdleRunsOut) {
  settings_.login_reuse.idle = milliseconds(20);
  const UpstreamCredentials alice = password("alice", "pw");
  pool().park(*pool().key_for(alice), logged_in(alice));
  EXPECT_TRUE(run_until([&] { return server_.logouts_now() == 1 && server_.open_now() == 0; }));
  EXPECT_EQ(pool().size(), 0u);
  EXPECT_EQ(parked_gauge(), 0);
}

TEST_F(ImapLoginPoolTest, AConnectionLoggedInBeforeMaxAgeIsNotKept) {
  settings_.login_reuse.max_age = milliseconds(5);
  const UpstreamCredentials alice = password("alice", "pw");
  std::unique_ptr<ImapClient> client = logged_in(alice);
  // The loop's clock must pass max_age after the login; the pool reads uv_now.
  const std::uint64_t logged_in_at = client->logged_in_at_ms();
  ASSERT_TRUE(run_until([&] { return uv_now(&loop_) >= logged_in_at + 5; }));
  pool().park(*pool().key_for(alice), std::move(client));
  EXPECT_EQ(pool().size(), 0u);
  EXPECT_TRUE(run_until([&] { return server_.logouts_now() == 1 && server_.open_now() == 0; }));
  EXPECT_EQ(parked_gauge(), 0);
}

TEST_F(ImapLoginPoolTest, AConnectionTheUpstreamDropsLeavesThePool) {
  const UpstreamCredentials alice = password("alice", "pw");
  pool().park(*pool().key_for(alice), logged_in(alice));
  server_.drop_connections();
  EXPECT_TRUE(run_until([&] { return pool().size() == 0; }));
  EXPECT_EQ(parked_gauge(), 0);
  EXPECT_EQ(pool().take(*pool().key_for(alice)), nullptr);
  EXPECT_EQ(server_.logouts_now(), 0);
}

// A kept connection's expiry and its connection's end both due when the loop next turns:
// libuv runs timers before it polls for I/O, so the expiry takes the connection out and
// its end then finds a detached entry, which must not be removed again (the sanitizer
// build would report the dead list position; the gauge would go below zero).
TEST_F(ImapLoginPoolTest, ExpiryAndTheConnectionsEndInOneLoopTurn) {
  settings_.login_reuse.idle = milliseconds(1);
  const UpstreamCredentials alice = password("alice", "pw");
  pool().park(*pool().key_for(alice), logged_in(alice));
  server_.drop_connections();
  ASSERT_TRUE(server_.wait_for([&] { return server_.connections_open() == 0; }));
  // The FIN is in the client's receive queue now; let the timer fall due as well, without
  // turning the loop, so that one turn sees both.
  const std::uint64_t parked_at = uv_now(&loop_);
  while (uv_hrtime() / 1'000'000 < parked_at + 10) {  // uv_now's clock may lag a tick
    std::this_thread::yield();
  }
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(pool().size(), 0u);
  EXPECT_TRUE(run_until([&] { return uv_now(&loop_) > parked_at + 20; }));
  EXPECT_EQ(parked_gauge(), 0);
}

// The other order: the end arrives, and the expiry that was due later must not fire.
TEST_F(ImapLoginPoolTest, TheConnectionsEndStopsItsExpiry) {
  settings_.login_reuse.idle = milliseconds(30);
  const UpstreamCredentials alice = password("alice", "pw");
  pool().park(*pool().key_for(alice), logged_in(alice));
  server_.drop_connections();
  EXPECT_TRUE(run_until([&] { return pool().size() == 0; }));
  const std::uint64_t removed_at = uv_now(&loop_);
  EXPECT_TRUE(run_until([&] { return uv_now(&loop_) > removed_at + 60; }));
  EXPECT_EQ(parked_gauge(), 0);
  EXPECT_EQ(server_.logouts_now(), 0);
}

TEST_F(ImapLoginPoolTest, DestroyingThePoolLogsOutWhatItKeeps) {
  for (const char* user : {"u1", "u2"}) {
    const UpstreamCredentials credentials = password(user, "pw");
    pool().park(*pool().key_for(credentials), logged_in(credentials));
  }
  EXPECT_EQ(parked_gauge(), 2);
  pool_.reset();
  EXPECT_EQ(parked_gauge(), 0);
  EXPECT_TRUE(run_until([&] { return server_.logouts_now() == 2 && server_.open_now() == 0; }));
}

}  // namespace
}  // namespace popbridge::proxy
