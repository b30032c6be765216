// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>

#include "protocol/common/secret.h"

namespace popbridge::proxy {

// What logs in upstream for one client.
struct UpstreamCredentials {
  enum class Mechanism { kPassword, kXoauth2, kOauthbearer };
  Mechanism mechanism = Mechanism::kPassword;
  std::string authzid;      // master login: the user acted for
  std::string user;         // who authenticates (the master user for a master login)
  protocol::Secret secret;  // password or access token
};

}  // namespace popbridge::proxy
