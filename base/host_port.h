// "host:port" as the listening flags take it (the server's --listen and
// --metrics-listen, `qaqkv rebalance --metrics-listen`).
#ifndef QAQKV_BASE_HOST_PORT_H_
#define QAQKV_BASE_HOST_PORT_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace qaqkv::base {

struct HostPort {
  std::string host;  // without the brackets of "[v6]:port"
  int port = 0;      // 0..65535; 0 picks a free one
};

// kInvalidArgument naming `flag` unless `addr` is host:port (or
// [v6]:port) with a port in 0..65535.
absl::StatusOr<HostPort> SplitHostPort(std::string_view addr, std::string_view flag);

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_HOST_PORT_H_
