// The cluster pieces that need no server: endpoint health and its backoff,
// the ticker, RunParallel, the membership ranking and DNS resolution of
// literal addresses. No gRPC call is made, so this runs under TSan too.
#include "client/internal/cluster.h"

#include <atomic>
#include <set>
#include <thread>

#include "absl/time/clock.h"
#include "client/internal/placement.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qaqkv::client::internal {
namespace {

TEST(EndpointTest, EjectionBacksOffAndASuccessReadmits) {
  Endpoint e("a:1", "127.0.0.1:1", {});
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const absl::Duration interval = absl::Seconds(2);
  EXPECT_TRUE(e.Available(t0));
  EXPECT_TRUE(e.DueForProbe(t0, interval));  // never probed
  e.Probed(t0);
  EXPECT_FALSE(e.DueForProbe(t0 + absl::Seconds(1), interval));
  EXPECT_TRUE(e.DueForProbe(t0 + absl::Seconds(2), interval));

  e.MarkDown(t0);  // first failure: probe again after 100 ms
  EXPECT_FALSE(e.Available(t0 + absl::Hours(1)));  // only a success readmits
  EXPECT_FALSE(e.DueForProbe(t0 + absl::Milliseconds(99), interval));
  EXPECT_TRUE(e.DueForProbe(t0 + absl::Milliseconds(100), interval));
  e.MarkDown(t0);  // second: 200 ms
  EXPECT_FALSE(e.DueForProbe(t0 + absl::Milliseconds(199), interval));
  EXPECT_TRUE(e.DueForProbe(t0 + absl::Milliseconds(200), interval));
  for (int i = 0; i < 40; ++i) e.MarkDown(t0);  // capped at 30 s
  EXPECT_FALSE(e.DueForProbe(t0 + absl::Seconds(29), interval));
  EXPECT_TRUE(e.DueForProbe(t0 + absl::Seconds(30), interval));
  EXPECT_EQ(e.consecutive_failures(), 30);

  e.MarkUp();
  EXPECT_TRUE(e.Available(t0));
  EXPECT_EQ(e.consecutive_failures(), 0);
}

TEST(MembershipTest, RankIsRendezvousOrderOverEveryEndpoint) {
  Membership m;
  for (const char* name : {"a:1", "b:1", "c:1", "d:1"}) {
    m.endpoints.push_back(std::make_shared<Endpoint>(name, name, std::vector<std::shared_ptr<grpc::Channel>>{}));
    m.hashes.push_back(m.endpoints.back()->hash());
  }
  EXPECT_EQ(m.hashes[2], EndpointHash("c:1"));
  for (const char* key : {"k1", "k2", "a longer key"}) {
    const std::vector<size_t> rank = m.Rank(key);
    EXPECT_EQ(rank, RankEndpoints(key, m.hashes, 4));
    EXPECT_EQ(std::set<size_t>(rank.begin(), rank.end()).size(), 4u);
  }
}

TEST(RunParallelTest, RunsEveryIndexConcurrently) {
  constexpr size_t kN = 6;
  std::atomic<int> arrived{0};
  std::vector<int> seen(kN, 0);
  RunParallel(kN, [&](size_t i) {
    seen[i] += 1;
    // Every call waits for all the others: only concurrent calls finish.
    arrived.fetch_add(1);
    while (arrived.load() < static_cast<int>(kN)) std::this_thread::yield();
  });
  EXPECT_EQ(seen, std::vector<int>(kN, 1));
  RunParallel(0, [&](size_t) { ADD_FAILURE() << "no work, no call"; });
}

TEST(TickerTest, TicksUntilDestroyed) {
  std::atomic<int> ticks{0};
  {
    Ticker t(absl::Milliseconds(5), [&] { ticks.fetch_add(1); });
    const absl::Time end = absl::Now() + absl::Seconds(10);
    while (ticks.load() < 3 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(1));
  }
  const int after = ticks.load();
  EXPECT_GE(after, 3);
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_EQ(ticks.load(), after);  // stopped with its destructor
}

TEST(ResolveServersTest, LiteralAddressesAndErrors) {
  auto v4 = ResolveServers("127.0.0.1:7070");
  ASSERT_TRUE(v4.ok()) << v4.status();
  ASSERT_EQ(v4->size(), 1u);
  EXPECT_EQ((*v4)[0].address, "127.0.0.1:7070");
  EXPECT_EQ((*v4)[0].name, "localhost:7070");  // reverse DNS (/etc/hosts)
  auto v6 = ResolveServers("[::1]:7070");
  if (v6.ok()) {  // a machine without IPv6 has no ::1 to resolve
    EXPECT_EQ((*v6)[0].address, "[::1]:7070");
  }
  for (const char* bad : {"no-port", ":7070", "host:", "host:0", "host:70000", "host:x"}) {
    EXPECT_EQ(ResolveServers(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ResolveServers("no-such-host.invalid:7070").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace qaqkv::client::internal
