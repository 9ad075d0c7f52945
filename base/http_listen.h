// Binding a cpp-httplib endpoint to a listening flag's host:port, the same
// way for every endpoint (the server's /metrics and probes, `qaqkv
// rebalance --metrics-listen`).
#ifndef QAQKV_BASE_HTTP_LISTEN_H_
#define QAQKV_BASE_HTTP_LISTEN_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "httplib.h"

namespace qaqkv::base {

// Binds `http` to `listen` (host:port, [v6]:port; port 0 picks a free
// one) and returns the port bound; the caller then serves with
// listen_after_bind(). With SO_REUSEADDR, so a restart binds while old
// connections sit in TIME_WAIT, and without cpp-httplib's default
// SO_REUSEPORT, which would let the endpoint share its port with another
// listener. kInvalidArgument naming `flag` for a malformed address,
// kUnavailable naming it when the bind fails.
absl::StatusOr<int> BindHttp(httplib::Server& http, std::string_view listen,
                             std::string_view flag);

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_HTTP_LISTEN_H_
