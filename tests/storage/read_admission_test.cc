#include "storage/internal/read_admission.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace qaqkv::storage::internal {
namespace {

TEST(ReadAdmissionTest, ASecondReadIsAdmittedAndThenForgotten) {
  ReadAdmission a(8);
  EXPECT_FALSE(a.Admit("p1"));
  EXPECT_FALSE(a.Admit("p2"));
  EXPECT_TRUE(a.Admit("p1"));
  // Admitted once: it starts over (the page is cached above by then).
  EXPECT_FALSE(a.Admit("p1"));
  EXPECT_TRUE(a.Admit("p1"));
  EXPECT_TRUE(a.Admit("p2"));
}

TEST(ReadAdmissionTest, TheWindowForgetsTheOldestFirstRead) {
  ReadAdmission a(4);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(a.Admit(absl::StrCat("k", i)));
  // k0 fell out of a window of 4; k1..k4 are still in it.
  EXPECT_FALSE(a.Admit("k0"));
  EXPECT_TRUE(a.Admit("k2"));
  EXPECT_TRUE(a.Admit("k3"));
  EXPECT_TRUE(a.Admit("k4"));
}

// A key admitted and then read once more holds a new slot: reusing the slot
// of its earlier first read must not forget it.
TEST(ReadAdmissionTest, AStaleSlotDoesNotForgetANewerFirstRead) {
  ReadAdmission a(3);
  EXPECT_FALSE(a.Admit("x"));  // read 1: slot 1
  EXPECT_TRUE(a.Admit("x"));
  EXPECT_FALSE(a.Admit("y"));  // read 2: slot 2
  EXPECT_FALSE(a.Admit("x"));  // read 3: slot 0, x's newer first read
  EXPECT_FALSE(a.Admit("z"));  // read 4: slot 1 again, x's stale slot
  EXPECT_TRUE(a.Admit("x"));
  EXPECT_TRUE(a.Admit("y"));
}

TEST(ReadAdmissionTest, ACapacityOfZeroIsOne) {
  ReadAdmission a(0);
  EXPECT_EQ(a.capacity(), 1u);
  EXPECT_FALSE(a.Admit("a"));
  EXPECT_TRUE(a.Admit("a"));
}

TEST(ReadAdmissionTest, ConcurrentReadersAdmitEachKeyOncePerPairOfReads) {
  ReadAdmission a(1 << 16);
  constexpr int kThreads = 4, kKeys = 2000;
  std::vector<int> admitted(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kKeys; ++i) admitted[t] += a.Admit(absl::StrCat("key", i)) ? 1 : 0;
    });
  }
  for (auto& th : threads) th.join();
  // Each key was read kThreads times: every second read is admitted.
  int total = 0;
  for (int n : admitted) total += n;
  EXPECT_EQ(total, kKeys * kThreads / 2);
}

}  // namespace
}  // namespace qaqkv::storage::internal
