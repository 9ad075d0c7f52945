// The thread pool and in-flight counter under the client's Offload and Load
// and the server's store writers. No gRPC here, so this runs under TSan too
// (the tests that make gRPC calls cannot: Debian's gRPC is not instrumented).
#include "base/thread_pool.h"

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace qaqkv::base {
namespace {

TEST(ThreadPoolTest, RunsEveryTaskAndWaitsForThem) {
  std::vector<int> done(1000, 0);
  {
    ThreadPool pool(4);
    TaskCounter tasks;
    for (int i = 0; i < 1000; ++i) {
      tasks.Add();
      pool.Submit([&, i] {
        done[i] = i + 1;  // each slot written by one task; read after WaitBelow
        tasks.Done();
      });
    }
    tasks.WaitBelow(1);
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(done[i], i + 1);
  }
}

// A bounded window, as Load keeps its decode backlog: never more than
// `limit` tasks in flight, whatever the number of submitters.
TEST(ThreadPoolTest, WaitBelowBoundsTasksInFlight) {
  ThreadPool pool(3);
  TaskCounter tasks;
  std::atomic<int> in_flight{0}, peak{0}, ran{0};
  constexpr int kLimit = 4;
  std::vector<std::thread> submitters;
  std::mutex submit_mu;  // one submitter at a time checks the window, as in Load
  for (int s = 0; s < 3; ++s) {
    submitters.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        std::lock_guard<std::mutex> lock(submit_mu);
        tasks.WaitBelow(kLimit);
        tasks.Add();
        const int now = ++in_flight;
        int p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
        pool.Submit([&] {
          ++ran;
          --in_flight;
          tasks.Done();
        });
      }
    });
  }
  for (auto& t : submitters) t.join();
  tasks.WaitBelow(1);
  EXPECT_EQ(ran.load(), 600);
  EXPECT_LE(peak.load(), kLimit);
}

// The destructor runs what is still queued before joining.
TEST(ThreadPoolTest, DestructorDrainsTheQueue) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(1);
    for (int i = 0; i < 100; ++i) pool.Submit([&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 100);
}

}  // namespace
}  // namespace qaqkv::base
