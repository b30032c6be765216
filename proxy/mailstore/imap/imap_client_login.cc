// SPDX-License-Identifier: Apache-2.0
// Getting ready and logging in: capabilities, IMAP ID, then AUTHENTICATE (PLAIN with
// SASL-IR, XOAUTH2, OAUTHBEARER) or LOGIN.
#include "protocol/common/base64.h"
#include "protocol/sasl/sasl.h"
#include "proxy/base/log.h"
#include "proxy/mailstore/imap/imap_client.h"

namespace popbridge::proxy {

void ImapClient::request_capabilities() {
  state_ = State::kCapability;
  send_parts({next_tag() + " CAPABILITY\r\n"}, false, nullptr, [this](const ImapResult& result) {
    if (!result.ok()) {
      fail(ImapResult::Failure::kProtocol, "CAPABILITY failed: " + result.text);
      return;
    }
    connection_ready();
  });
}

void ImapClient::set_client_identity(std::string address, std::uint16_t port,
                                     std::string session_id) {
  client_address_ = std::move(address);
  client_port_ = port;
  session_id_ = std::move(session_id);
}

void ImapClient::connection_ready() {
  if (settings_.send_id && !client_address_.empty() && has_capability("ID")) {
    send_id();
    if (!settings_.pipelining) {
      return;  // ready once ID is answered
    }
  }
  state_ = State::kLoggingIn;
  if (in_flight_ == 0) {
    timer_.stop();  // an ID in flight keeps its command timer
  }
  log::debug("upstream_connected", {{"tls", connection_->tls_summary()}});
  if (ready_) {
    auto ready = std::move(ready_);
    ready_ = nullptr;
    ImapResult result;
    result.kind = ImapResult::Kind::kOk;
    ready(result);
  }
}

void ImapClient::send_id() {
  // Addresses, digits and our own ids need no escaping inside quotes.
  auto pair = [](std::string_view key, std::string_view value) {
    return "\"" + std::string(key) + "\" \"" + std::string(value) + "\"";
  };
  protocol::ImapCommand id("ID");
  id.raw("(" + pair("name", "popbridge") + " " + pair("x-originating-ip", client_address_) + " " +
         pair("x-originating-port", std::to_string(client_port_)) + " " +
         pair("x-session-ext-id", session_id_) + ")");
  client_address_.clear();  // ID once per connection
  run(id, nullptr, [this](const ImapResult&) {
    // An ID the server refuses changes nothing for the login, which is pipelined behind it
    // or sent now. A connection lost before login never gets here: fail() reports it to
    // the connect callback instead.
    if (!settings_.pipelining) {
      connection_ready();
    }
  });
}

void ImapClient::authenticate(std::string_view mechanism, std::string_view message,
                              Completion done) {
  std::string encoded = protocol::base64_encode(message);
  std::vector<std::string> parts;
  if (has_capability("SASL-IR")) {
    parts.push_back(next_tag() + " AUTHENTICATE " + std::string(mechanism) + " " + encoded +
                    "\r\n");
  } else {
    parts.push_back(next_tag() + " AUTHENTICATE " + std::string(mechanism) + "\r\n");
    parts.push_back(encoded + "\r\n");
  }
  protocol::wipe(encoded.data(), encoded.size());
  send_parts(std::move(parts), true, nullptr, std::move(done), Flight::kPipelined);
  queue_.back().authenticating = true;
  if (mechanism == "XOAUTH2") {
    queue_.back().final_response.clear();
  } else if (mechanism == "OAUTHBEARER") {
    queue_.back().final_response = "AQ==";
  }
}

void ImapClient::ask_capabilities_after_login(const Completion& done, const ImapResult& logged_in) {
  // Pipelined, the login is reported at once: what follows it (SELECT) seldom depends on
  // the answer, and the caller asks capabilities_pending() where it does. A refusal
  // leaves the set empty, which means fewer extensions used, not a failed login.
  const bool pipelined = settings_.pipelining;
  capabilities_pending_ = pipelined;
  send_parts(
      {next_tag() + " CAPABILITY\r\n"}, false, nullptr,
      [this, pipelined, done, logged_in](const ImapResult& caps) {
        capabilities_pending_ = false;
        if (caps.kind == ImapResult::Kind::kFailed) {
          if (!pipelined) {
            done(caps);  // pipelined, the commands behind it hear of the failure
          }
          return;
        }
        if (!caps.ok()) {
          log::warn("upstream_capability_refused", {{"reason", caps.text}});
        }
        if (!pipelined) {
          done(logged_in);
        }
      },
      Flight::kPipelined);
  if (pipelined) {
    done(logged_in);
  }
}

void ImapClient::login(const UpstreamCredentials& credentials, Completion done) {
  const std::string_view authzid = credentials.authzid;
  const std::string_view user = credentials.user;
  const protocol::Secret& password = credentials.secret;
  auto finish = [this, done = std::move(done)](const ImapResult& result) {
    if (result.ok()) {
      state_ = State::kReady;
      logged_in_at_ms_ = uv_now(loop_);
      if (!has_capability("IMAP4REV1") && !has_capability("IMAP4REV2")) {
        // The login answer carried no capabilities (Courier, Exchange): ask, since they
        // may change after login.
        ask_capabilities_after_login(done, result);
        return;
      }
    }
    done(result);
  };
  // Capabilities may grow after login; only the tagged OK's list or a CAPABILITY response
  // sent during the login (Gmail's, untagged) replaces them, so otherwise the pre-login
  // set is dropped once login succeeds.
  const std::uint64_t replies_before_login = capability_replies_;
  auto finish_and_refresh = [this, replies_before_login,
                             finish = std::move(finish)](const ImapResult& result) {
    if (result.ok() && result.code_atom() != "CAPABILITY" &&
        capability_replies_ == replies_before_login) {
      capabilities_.clear();
    }
    finish(result);
  };
  auto refuse = [&](std::string text) {
    // Decided here, not by the server: a login this server can never accept (RFC 5530's
    // CANNOT), which retrying will not change.
    ImapResult result;
    result.kind = ImapResult::Kind::kNo;
    result.code = "CANNOT";
    result.text = std::move(text);
    finish_and_refresh(result);
  };
  if (credentials.mechanism != UpstreamCredentials::Mechanism::kPassword) {
    const bool xoauth2 = credentials.mechanism == UpstreamCredentials::Mechanism::kXoauth2;
    const char* mechanism = xoauth2 ? "XOAUTH2" : "OAUTHBEARER";
    if (!has_capability(std::string("AUTH=") + mechanism)) {
      refuse(std::string("upstream does not offer ") + mechanism);
      return;
    }
    // XOAUTH2 (Google, Microsoft) and RFC 7628 OAUTHBEARER carry the same bearer token.
    std::string message = xoauth2
                              ? "user=" + std::string(user) +
                                    "\x01"
                                    "auth=Bearer " +
                                    std::string(password.view()) + "\x01\x01"
                              : "n,a=" + std::string(user) + ",\x01host=" + settings_.address.host +
                                    "\x01port=" + std::to_string(settings_.address.port) +
                                    "\x01"
                                    "auth=Bearer " +
                                    std::string(password.view()) + "\x01\x01";
    authenticate(mechanism, message, std::move(finish_and_refresh));
    protocol::wipe(message.data(), message.size());
    return;
  }
  if (has_capability("AUTH=PLAIN")) {
    protocol::Secret message = protocol::build_sasl_plain(authzid, user, password.view());
    authenticate("PLAIN", message.view(), std::move(finish_and_refresh));
    return;
  }
  if (has_capability("LOGINDISABLED") || !authzid.empty()) {
    refuse(authzid.empty() ? "upstream offers no usable login method"
                           : "a master login needs AUTH=PLAIN upstream");
    return;
  }
  protocol::ImapCommand command("LOGIN");
  command.astring(user).astring(password.view());
  std::vector<std::string> parts = command.render(next_tag(), has_capability("LITERAL+"));
  send_parts(std::move(parts), true, nullptr, std::move(finish_and_refresh), Flight::kPipelined);
}

}  // namespace popbridge::proxy
