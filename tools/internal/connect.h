// A Client from the command line's connection flags (--target, or
// --servers / --discovery for a sharded deployment; token, TLS, deadline).
#ifndef QAQKV_TOOLS_INTERNAL_CONNECT_H_
#define QAQKV_TOOLS_INTERNAL_CONNECT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "qaqkv/client.h"
#include "tools/commands.h"

namespace qaqkv::tools {

// kInvalidArgument naming the flag for unreadable TLS files; the client's
// own validation otherwise.
absl::StatusOr<std::unique_ptr<client::Client>> Connect(const ConnectArgs& args);
// The servers the flags name, for messages.
std::string DescribeServers(const ConnectArgs& args);

}  // namespace qaqkv::tools

#endif  // QAQKV_TOOLS_INTERNAL_CONNECT_H_
