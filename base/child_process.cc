#include "base/child_process.h"

#include <arpa/inet.h>
#include <sched.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

extern char** environ;

namespace qaqkv::base {
namespace {

// Set once at the start of main(), before any thread starts; read-only after.
std::vector<std::string>* g_child_environment = nullptr;

}  // namespace

void SnapshotEnvironmentForChildren() {
  static std::vector<std::string> saved;
  saved.clear();
  for (char** e = environ; *e != nullptr; ++e) saved.emplace_back(*e);
  g_child_environment = &saved;
}

absl::StatusOr<std::vector<int>> ParseCpuList(std::string_view spec, std::string_view flag) {
  const std::string name(flag);
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    return absl::InternalError(absl::StrCat("sched_getaffinity: ", std::strerror(errno)));
  }
  auto usable = [&](int cpu) { return cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &allowed); };
  if (spec == "all") return std::vector<int>();
  if (spec == "last") {
    for (int cpu = CPU_SETSIZE - 1; cpu >= 0; --cpu) {
      if (usable(cpu)) return std::vector<int>{cpu};
    }
    return absl::InternalError("sched_getaffinity: no CPU");
  }
  std::vector<int> cpus;
  for (absl::string_view part : absl::StrSplit(absl::string_view(spec.data(), spec.size()), ',')) {
    const std::vector<absl::string_view> ends = absl::StrSplit(part, '-');
    int lo = -1, hi = -1;
    if (ends.size() > 2 || !absl::SimpleAtoi(ends.front(), &lo) ||
        !absl::SimpleAtoi(ends.back(), &hi) || lo < 0 || lo > hi) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": '", part, "' is not a CPU or range (want \"all\", \"last\" or e.g. 0,2-3)"));
    }
    for (int cpu = lo; cpu <= hi; ++cpu) {
      if (!usable(cpu)) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": CPU ", cpu, " is not one this process may run on"));
      }
      cpus.push_back(cpu);
    }
  }
  return cpus;
}

absl::StatusOr<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& argv,
                                                 const std::string& log_path,
                                                 const std::vector<int>& cpus) {
  if (argv.empty()) return absl::InvalidArgumentError("argv: empty");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string log = log_path.empty() ? "/dev/null" : log_path;
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  if (g_child_environment != nullptr) {
    for (std::string& e : *g_child_environment) env.push_back(e.data());
    env.push_back(nullptr);
  }
  // posix_spawn has no affinity attribute, but a child starts with the
  // spawning thread's CPU mask: set ours around the spawn, then restore it.
  cpu_set_t before;
  CPU_ZERO(&before);
  const bool pin = !cpus.empty();
  if (pin) {
    cpu_set_t want;
    CPU_ZERO(&want);
    for (int cpu : cpus) {
      if (cpu < 0 || cpu >= CPU_SETSIZE) {
        posix_spawn_file_actions_destroy(&actions);
        return absl::InvalidArgumentError(absl::StrCat("cpus: ", cpu, " is out of range"));
      }
      CPU_SET(cpu, &want);
    }
    if (sched_getaffinity(0, sizeof(before), &before) != 0 ||
        sched_setaffinity(0, sizeof(want), &want) != 0) {
      const int err = errno;
      posix_spawn_file_actions_destroy(&actions);
      return absl::InvalidArgumentError(
          absl::StrCat("cpus: cannot run on them: ", std::strerror(err)));
    }
  }
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(),
                              g_child_environment != nullptr ? env.data() : environ);
  if (pin) sched_setaffinity(0, sizeof(before), &before);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::NotFoundError(absl::StrCat("cannot start ", argv[0], ": ", std::strerror(rc)));
  }
  return ChildProcess(pid);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) (void)Stop(SIGKILL, absl::Seconds(5));
    pid_ = other.pid_;
    other.pid_ = -1;
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) (void)Stop(SIGKILL, absl::Seconds(5));
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

absl::StatusOr<int> ChildProcess::Stop(int signal, absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("child: not running");
  kill(pid_, signal);
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) break;
    if (r < 0 && errno != EINTR) {
      pid_ = -1;
      return absl::InternalError("waitpid failed");
    }
    if (absl::Now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      pid_ = -1;
      return absl::DeadlineExceededError(
          absl::StrCat("child did not exit within ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

uint64_t ChildProcess::PeakRssBytes() const {
  if (pid_ <= 0) return 0;
  std::ifstream in(absl::StrCat("/proc/", pid_, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      uint64_t kib = 0;
      absl::string_view v = absl::StripAsciiWhitespace(absl::string_view(line).substr(6));
      v = absl::StripSuffix(v, " kB");
      if (absl::SimpleAtoi(v, &kib)) return kib * 1024;
    }
  }
  return 0;
}

absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::UnavailableError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  if (port <= 0) return absl::UnavailableError("no free loopback port");
  return port;
}

absl::StatusOr<int> WaitForPortFile(const std::string& path, ChildProcess& child,
                                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::ifstream in(path);
    int port = 0;
    if (in >> port && port > 0) return port;
    if (!child.running()) return absl::UnavailableError("server exited before serving");
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::DeadlineExceededError(absl::StrCat("no port in ", path));
}

absl::Status WaitForTcp(int port, ChildProcess& child, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (ok) return absl::OkStatus();
    if (!child.running()) return absl::UnavailableError("server exited before serving");
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::DeadlineExceededError(absl::StrCat("nothing listens on port ", port));
}

std::string ExecutableDir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

}  // namespace qaqkv::base
