#include "base/host_port.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace qaqkv::base {

absl::StatusOr<HostPort> SplitHostPort(std::string_view addr_in, std::string_view flag) {
  const absl::string_view addr = AsAbsl(addr_in);
  const size_t colon = addr.rfind(':');
  absl::string_view host = colon == absl::string_view::npos ? addr : addr.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  if (colon == absl::string_view::npos || host.empty() ||
      !absl::SimpleAtoi(addr.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        AsAbsl(flag), ": want host:port with a port in 0..65535 (0 picks one), got \"", addr,
        "\""));
  }
  return HostPort{std::string(host), port};
}

}  // namespace qaqkv::base
