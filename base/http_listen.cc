#include "base/http_listen.h"

#include <sys/socket.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/host_port.h"
#include "base/status_macros.h"
#include "base/strings.h"

namespace qaqkv::base {

absl::StatusOr<int> BindHttp(httplib::Server& http, std::string_view listen,
                             std::string_view flag) {
  QAQKV_ASSIGN_OR_RETURN(const HostPort at, SplitHostPort(listen, flag));
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  const int port = at.port == 0 ? http.bind_to_any_port(at.host)
                                : (http.bind_to_port(at.host, at.port) ? at.port : -1);
  if (port <= 0) return absl::UnavailableError(absl::StrCat(AsAbsl(flag), ": cannot bind ", AsAbsl(listen)));
  return port;
}

}  // namespace qaqkv::base
