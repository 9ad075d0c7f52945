// A child process its starter owns: the qaqkv-server and redis-server that
// `qaqkv bench service` and the tests start. The destructor kills and reaps
// the child, so no error path leaves a server running.
#ifndef QAQKV_BASE_CHILD_PROCESS_H_
#define QAQKV_BASE_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace qaqkv::base {

// Children start with the environment qaqkv was given, captured by this
// call at the start of main(), not with the gRPC settings qaqkv then sets
// for its own client side: a qaqkv-server the bench starts runs with the
// server's defaults, as it would on its own. Without the call, children
// inherit the current environment.
void SnapshotEnvironmentForChildren();

class ChildProcess {
 public:
  // Starts argv[0] (searched in PATH) with stdout and stderr appended to
  // `log_path` (or /dev/null when empty). With `cpus`, the child and every
  // thread it starts run only on those CPUs (empty: wherever we may run).
  static absl::StatusOr<ChildProcess> Spawn(const std::vector<std::string>& argv,
                                            const std::string& log_path = "",
                                            const std::vector<int>& cpus = {});
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool running();
  // Sends `signal` and waits up to `timeout` for the exit; returns the exit
  // code (128 + signal when killed by one). Kills with SIGKILL past it.
  absl::StatusOr<int> Stop(int signal, absl::Duration timeout);
  // Peak resident set size (VmHWM) in bytes, 0 when unknown.
  uint64_t PeakRssBytes() const;

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

// A CPU list for Spawn: "all" (empty: no pinning), "last" (the highest CPU
// this process may run on) or CPU numbers and ranges such as "0,2-3", each
// one this process may run on. kInvalidArgument naming `flag` otherwise.
absl::StatusOr<std::vector<int>> ParseCpuList(std::string_view spec, std::string_view flag);

// A TCP port on 127.0.0.1 that was free a moment ago (for servers that
// cannot report the port they bound).
absl::StatusOr<int> FreeLoopbackPort();

// Waits until `path` holds a port number (written by qaqkv-server
// --port-file) or `child` exits.
absl::StatusOr<int> WaitForPortFile(const std::string& path, ChildProcess& child,
                                    absl::Duration timeout);

// Waits until 127.0.0.1:`port` accepts a TCP connection.
absl::Status WaitForTcp(int port, ChildProcess& child, absl::Duration timeout);

// The directory of the running executable (to find sibling binaries).
std::string ExecutableDir();

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_CHILD_PROCESS_H_
