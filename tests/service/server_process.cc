#include "tests/service/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

#ifndef QAQKV_BINARY_DIR
#error "QAQKV_BINARY_DIR must name the build tree (set by tests/service/CMakeLists.txt)"
#endif

namespace qaqkv::service::testing {
namespace {

// Between polls of a condition (a file appearing, a child exiting). Short, so
// polling costs little latency; this is never a wait for something to happen.
constexpr absl::Duration kPollInterval = absl::Milliseconds(5);

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Tail(const std::string& text, size_t n = 4000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

// Adds the `authorization` header to every call of a channel. gRPC owns the
// interceptors it gets from the factory (its documented contract), hence the
// plain `new`.
class AuthorizationInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit AuthorizationInterceptor(std::string value) : value_(std::move(value)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", value_);
    }
    methods->Proceed();
  }

 private:
  const std::string value_;
};

class AuthorizationInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit AuthorizationInterceptorFactory(std::string value)
      : value_(std::move(value)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new AuthorizationInterceptor(value_);
  }

 private:
  const std::string value_;
};

// Forks and execs `argv` with stdin from /dev/null and stdout and stderr
// appended to `log_path`. Everything the child runs between fork and exec is
// async-signal-safe (the parent is multi-threaded).
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv,
                            const std::string& log_path) {
  if (argv.empty()) return absl::InvalidArgumentError("argv: empty");
  const int log_fd =
      open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(
        absl::StrCat("open ", log_path, ": ", std::strerror(errno)));
  }
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("open /dev/null: ", std::strerror(errno)));
  }
  std::vector<char*> ptrs;
  ptrs.reserve(argv.size() + 1);
  for (const std::string& a : argv) ptrs.push_back(const_cast<char*>(a.c_str()));
  ptrs.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    // Die with the test: a crashed or killed test must not leave a server.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execv(ptrs[0], ptrs.data());
    _exit(127);
  }
  const int fork_errno = errno;
  close(log_fd);
  close(null_fd);
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(fork_errno)));
  }
  return pid;
}

// Polls waitpid for `pid` until it exits or `timeout` passes. Returns the
// raw wait status; kDeadlineExceeded when still running.
absl::StatusOr<int> PollExit(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("waitpid: ", std::strerror(errno)));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "pid ", pid, " still running after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(kPollInterval);
  }
}

void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

std::string ServerBinary() {
  if (const char* env = std::getenv("QAQKV_SERVER_BINARY");
      env != nullptr && *env != '\0') {
    return env;
  }
  return QAQKV_BINARY_DIR "/service/qaqkv-server";
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           const ClientOptions& options) {
  grpc::ChannelArguments args;
  // Separate connections per channel (gRPC shares subchannels between
  // channels with equal arguments by default).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(256 << 20);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls_root_pem.empty()) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_pem;
    ssl.pem_cert_chain = options.tls_client_cert_pem;
    ssl.pem_private_key = options.tls_client_key_pem;
    creds = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  std::string authorization = options.authorization;
  if (authorization.empty() && !options.bearer_token.empty()) {
    authorization = absl::StrCat("Bearer ", options.bearer_token);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      factories;
  if (!authorization.empty()) {
    factories.push_back(std::make_unique<AuthorizationInterceptorFactory>(authorization));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, creds, args,
                                                                 std::move(factories));
}

absl::StatusOr<ExitResult> RunToExit(const std::vector<std::string>& argv,
                                     absl::Duration timeout) {
  base::TempDir dir = MakeTempDir();
  const std::string log = dir.path() + "/output";
  auto pid = Spawn(argv, log);
  if (!pid.ok()) return pid.status();
  auto status = PollExit(*pid, timeout);
  if (!status.ok()) {
    KillAndReap(*pid);
    return absl::Status(
        status.status().code(),
        absl::StrCat(absl::StrJoin(argv, " "), ": ", status.status().message(), "\n",
                     Tail(ReadWholeFile(log))));
  }
  ExitResult r;
  if (WIFEXITED(*status)) r.exit_code = WEXITSTATUS(*status);
  if (WIFSIGNALED(*status)) r.term_signal = WTERMSIG(*status);
  r.output = ReadWholeFile(log);
  return r;
}

ServerProcess::ServerProcess() = default;

ServerProcess::~ServerProcess() { Kill(); }

std::string ServerProcess::target() const { return absl::StrCat("127.0.0.1:", port_); }

std::string ServerProcess::data_dir() const { return dir_.path() + "/db"; }

std::string ServerProcess::Log() const {
  return ReadWholeFile(dir_.path() + "/server.log");
}

absl::StatusOr<int> ServerProcess::Start(std::vector<std::string> extra_args,
                                         absl::Duration timeout) {
  if (running()) return absl::FailedPreconditionError("a server is already running");
  const std::string port_file = dir_.path() + "/port";
  std::error_code ec;
  std::filesystem::remove(port_file, ec);
  last_args_ = std::move(extra_args);
  std::vector<std::string> argv = {ServerBinary(), "--listen=127.0.0.1:0",
                                   absl::StrCat("--port-file=", port_file),
                                   absl::StrCat("--data-dir=", data_dir())};
  argv.insert(argv.end(), last_args_.begin(), last_args_.end());
  auto pid = Spawn(argv, dir_.path() + "/server.log");
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  port_ = 0;

  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    // The server writes the file under another name and renames it, so a
    // file that exists holds the whole port.
    if (std::filesystem::exists(port_file, ec)) {
      int port = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadWholeFile(port_file)), &port) &&
          port > 0) {
        port_ = port;
        return port_;
      }
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::UnavailableError(
          absl::StrCat("qaqkv-server exited before serving (",
                       WIFEXITED(status) ? absl::StrCat("exit code ", WEXITSTATUS(status))
                                         : absl::StrCat("signal ", WTERMSIG(status)),
                       "): ", absl::StrJoin(argv, " "), "\n", Tail(Log())));
    }
    if (absl::Now() > deadline) {
      Kill();
      return absl::DeadlineExceededError(
          absl::StrCat("qaqkv-server wrote no port file within ",
                       absl::FormatDuration(timeout), "\n", Tail(Log())));
    }
    absl::SleepFor(kPollInterval);
  }
}

absl::StatusOr<int> ServerProcess::Restart(absl::Duration timeout) {
  return Start(last_args_, timeout);
}

absl::StatusOr<int> ServerProcess::Wait(absl::Duration timeout) {
  if (!running()) return absl::FailedPreconditionError("no server is running");
  auto status = PollExit(pid_, timeout);
  if (!status.ok()) {
    if (absl::IsDeadlineExceeded(status.status())) Kill();
    return status.status();
  }
  pid_ = -1;
  if (WIFSIGNALED(*status)) {
    return absl::AbortedError(absl::StrCat("qaqkv-server died of signal ",
                                           WTERMSIG(*status), "\n", Tail(Log())));
  }
  return WEXITSTATUS(*status);
}

absl::Status ServerProcess::Signal(int signal) {
  if (!running()) return absl::FailedPreconditionError("no server is running");
  if (kill(pid_, signal) != 0) {
    return absl::InternalError(absl::StrCat("kill: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ServerProcess::Terminate(absl::Duration timeout) {
  if (absl::Status s = Signal(SIGTERM); !s.ok()) return s;
  return Wait(timeout);
}

void ServerProcess::Kill() {
  if (!running()) return;
  KillAndReap(pid_);
  pid_ = -1;
}

std::shared_ptr<grpc::Channel> ServerProcess::Channel(
    const ClientOptions& options) const {
  return MakeChannel(target(), options);
}

std::unique_ptr<v1::KvCache::Stub> ServerProcess::Stub(
    const ClientOptions& options) const {
  return v1::KvCache::NewStub(Channel(options));
}

}  // namespace qaqkv::service::testing
