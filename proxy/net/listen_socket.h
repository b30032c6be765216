#pragma once

#include <uv.h>

#include <string>

#include "config/config.h"

namespace popbridge::proxy {

// Binds handle to address with SO_REUSEPORT, so every worker loop can bind the same
// address and the kernel spreads new connections across their accept queues (libuv 1.44
// cannot set the option itself). Returns 0 or a libuv error code; a non-IP host sets
// error and returns UV_EINVAL.
int bind_reuseport(uv_tcp_t* handle, const config::Endpoint& address, std::string& error);

}  // namespace popbridge::proxy
