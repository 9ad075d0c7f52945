// ChildProcess's CPU pinning and environment, and ParseCpuList's answers to
// good and bad lists: `qaqkv bench service --server-cpus` rests on them.
#include "base/child_process.h"

#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace qaqkv::base {
namespace {

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  EXPECT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

// Runs `script` under /bin/sh with its output in a file; returns the output.
std::string RunShell(const std::string& script, const std::vector<int>& cpus = {}) {
  const std::string log = ::testing::TempDir() + "/child_process_test_" +
                          std::to_string(getpid()) + "_" + std::to_string(rand()) + ".log";
  auto child = ChildProcess::Spawn({"/bin/sh", "-c", script}, log, cpus);
  EXPECT_TRUE(child.ok()) << child.status();
  if (!child.ok()) return "";
  for (int i = 0; i < 500 && child->running(); ++i) usleep(10000);
  std::ifstream in(log);
  std::stringstream out;
  out << in.rdbuf();
  std::filesystem::remove(log);
  return out.str();
}

TEST(ParseCpuListTest, AllMeansNoPinningAndLastIsTheHighestAllowedCpu) {
  auto all = ParseCpuList("all", "--cpus");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(all->empty());
  auto last = ParseCpuList("last", "--cpus");
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(*last, std::vector<int>{AllowedCpus().back()});
}

TEST(ParseCpuListTest, ListsAndRangesOfAllowedCpus) {
  const std::vector<int> allowed = AllowedCpus();
  const int a = allowed.front();
  auto one = ParseCpuList(std::to_string(a), "--cpus");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, std::vector<int>{a});
  if (allowed.size() >= 2 && allowed[1] == a + 1) {
    auto range = ParseCpuList(std::to_string(a) + "-" + std::to_string(a + 1), "--cpus");
    ASSERT_TRUE(range.ok()) << range.status();
    EXPECT_EQ(*range, (std::vector<int>{a, a + 1}));
  }
}

TEST(ParseCpuListTest, BadListsNameTheFlag) {
  for (const char* bad : {"", "x", "1-", "-1", "3-1", "0,,1", "1.5", "99999"}) {
    auto cpus = ParseCpuList(bad, "--server-cpus");
    ASSERT_FALSE(cpus.ok()) << "'" << bad << "' parsed";
    EXPECT_EQ(cpus.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(cpus.status().message().find("--server-cpus"), std::string::npos)
        << cpus.status().message();
  }
}

TEST(ChildProcessTest, PinnedChildRunsOnlyOnItsCpusAndTheParentKeepsItsMask) {
  const std::vector<int> before = AllowedCpus();
  const int cpu = before.back();
  const std::string out = RunShell("grep Cpus_allowed_list /proc/self/status", {cpu});
  EXPECT_EQ(out, "Cpus_allowed_list:\t" + std::to_string(cpu) + "\n");
  EXPECT_EQ(AllowedCpus(), before);
}

TEST(ChildProcessTest, ChildrenGetTheSnapshottedEnvironment) {
  ASSERT_EQ(setenv("QAQKV_CHILD_TEST", "given", 1), 0);
  SnapshotEnvironmentForChildren();
  ASSERT_EQ(setenv("QAQKV_CHILD_TEST", "changed later", 1), 0);
  EXPECT_EQ(RunShell("echo \"$QAQKV_CHILD_TEST\""), "given\n");
}

}  // namespace
}  // namespace qaqkv::base
