// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "protocol/pop3/uidl_map.h"

namespace popbridge::proxy {

// The file of a user's UIDL map in upstream.uidl_map.directory: the user name with every
// octet outside [A-Za-z0-9@._+-], and a leading '.', written as %XX, so no name can
// reach outside the directory.
std::string uidl_map_file_name(const std::string& user);

struct UidlMapRead {
  std::optional<protocol::UidlMap> map;  // nullopt: no file, or an unusable one
  bool found = false;                    // the file exists
  std::string problem;                   // why the file is unusable, or its lines left out
};

// Reads the user's map (a small local file; ConfigMaps and volumes keep it in the page
// cache). A missing file is not a problem: that user simply has no map.
UidlMapRead read_uidl_map_file(const std::string& directory, const std::string& user);
// A map's text from elsewhere (IMAP METADATA); origin names it in problems.
UidlMapRead read_uidl_map_text(std::string_view text, const std::string& origin);

}  // namespace popbridge::proxy
