// The real qaqkv-server as a child process, for the service tests.
//
// Every test starts the binary built from service/main.cc (never an
// in-process server, never a fake) on 127.0.0.1 with a port picked by the
// kernel, a RocksDB under a fresh temporary directory, and talks to it over
// gRPC. `ServerProcess` owns the child: its destructor SIGKILLs and reaps a
// child that is still running, and the child also gets SIGKILL if the test
// process dies first (PR_SET_PDEATHSIG), so a failing or crashing test never
// leaves a server behind.
//
// Thread-safety: a ServerProcess is used from one thread (the test's);
// channels and stubs it hands out are thread-safe as gRPC's are. Start and
// Restart must be called from a thread that outlives the child (the test's
// main thread): the parent-death signal follows the thread that forked.
#ifndef QAQKV_TESTS_SERVICE_SERVER_PROCESS_H_
#define QAQKV_TESTS_SERVICE_SERVER_PROCESS_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/file.h"
#include "qaqkv/v1/kvcache.grpc.pb.h"
#include "tests/storage/test_util.h"

namespace qaqkv::service::testing {

using storage::testing::MakeTempDir;

// Path of the qaqkv-server binary: $QAQKV_SERVER_BINARY when set (to test
// another build of the server), else the one of this build tree.
std::string ServerBinary();

// How a client channel authenticates. All fields are optional.
struct ClientOptions {
  // Sent as `authorization: Bearer <token>` on every call of the channel.
  std::string bearer_token;
  // Sent verbatim as the `authorization` value (overrides bearer_token), to
  // test malformed headers.
  std::string authorization;
  // TLS: the CA (PEM) the server certificate must chain to. Empty: plaintext.
  std::string tls_root_pem;
  // mTLS: the client's certificate chain and key (PEM).
  std::string tls_client_cert_pem;
  std::string tls_client_key_pem;
  // The name the server certificate is checked against (TLS only).
  std::string tls_server_name = "localhost";
};

// A new channel to `target` ("host:port"). Each channel gets its own
// subchannel pool, so two channels never share a connection.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           const ClientOptions& options = {});

// How a child process ended.
struct ExitResult {
  int exit_code = -1;   // WEXITSTATUS, or -1 when it died of a signal
  int term_signal = 0;  // the signal that ended it, or 0
  std::string output;   // its stdout and stderr, interleaved
};

// Runs `argv` (argv[0] is the path) to completion with stdout and stderr
// captured; kills it and returns kDeadlineExceeded past `timeout`.
absl::StatusOr<ExitResult> RunToExit(const std::vector<std::string>& argv,
                                     absl::Duration timeout);

class ServerProcess {
 public:
  // Creates the temporary directory that holds the data dir, the port file
  // and the child's log. Starts nothing.
  ServerProcess();
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts the server with `--listen=127.0.0.1:0 --port-file=<dir>/port
  // --data-dir=<dir>/db` plus `extra_args`, and waits (polling, up to
  // `timeout`) for the port file. Returns the port. kFailedPrecondition if a
  // child is running; kUnavailable (with its exit status and log) if the
  // child exits before serving; kDeadlineExceeded (child killed) on timeout.
  absl::StatusOr<int> Start(std::vector<std::string> extra_args = {},
                            absl::Duration timeout = absl::Seconds(90));
  // Starts again with the arguments of the last Start, on the same data dir.
  absl::StatusOr<int> Restart(absl::Duration timeout = absl::Seconds(90));

  // Sends SIGTERM and waits (polling) for the child to exit; returns its
  // exit code. kAborted if it died of a signal; kDeadlineExceeded if it is
  // still running after `timeout` (it is then SIGKILLed and reaped).
  absl::StatusOr<int> Terminate(absl::Duration timeout = absl::Seconds(90));
  // Sends SIGKILL and reaps the child. No-op when none is running.
  void Kill();
  // Sends `signal` and returns at once (Wait collects the exit).
  absl::Status Signal(int signal);
  // Polls until the child exits; as Terminate after its signal.
  absl::StatusOr<int> Wait(absl::Duration timeout = absl::Seconds(90));

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string target() const;  // "127.0.0.1:<port>"
  const std::string& dir() const { return dir_.path(); }
  std::string data_dir() const;
  // Everything the child (all of its incarnations) wrote to stdout/stderr.
  std::string Log() const;

  std::shared_ptr<grpc::Channel> Channel(const ClientOptions& options = {}) const;
  std::unique_ptr<v1::KvCache::Stub> Stub(const ClientOptions& options = {}) const;

 private:
  base::TempDir dir_ = MakeTempDir();
  std::vector<std::string> last_args_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace qaqkv::service::testing

#endif  // QAQKV_TESTS_SERVICE_SERVER_PROCESS_H_
