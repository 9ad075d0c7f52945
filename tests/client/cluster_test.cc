// The sharded, replicated client against several real qaqkv-server
// processes on loopback (each with its own RocksDB in a temporary
// directory): placement by rendezvous hashing, replication, a server killed
// (SIGKILL) and restarted with read repair bringing it back in line, a
// server stopped (SIGSTOP) in the middle of a write stream, a fourth server
// added, sessions, discovery by DNS name, and option validation.

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/internal/placement.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qaqkv/client.h"
#include "tests/client/cluster_fixture.h"
#include "tests/client/test_kv.h"
#include "tests/service/server_process.h"
#include "base/child_process.h"

namespace qaqkv::client {
namespace {

using service::testing::ServerProcess;
using ::testing::HasSubstr;

using testing::kBlockTokens;
using testing::kLayers;
using testing::Kv;
using testing::MakeKv;
using testing::Out;
using testing::SmallGeometry;

using testing::ClusterTest;
using testing::Keys;

TEST_F(ClusterTest, BlocksLiveOnTheirTwoRendezvousReplicas) {
  StartServers(3);
  auto c = Connect({});
  ASSERT_NE(c, nullptr);
  const auto keys = Keys(24, 1);
  const Kv kv = MakeKv(24 * kBlockTokens, 1);
  ASSERT_TRUE(Offload(*c, keys, kv).ok());
  for (const BlockKey& key : keys) {
    const std::vector<size_t> want = Placement(key, Targets(), 2);
    for (size_t s = 0; s < 3; ++s) {
      const bool placed = std::find(want.begin(), want.end(), s) != want.end();
      EXPECT_EQ(Holds(s, key), placed) << "server " << s;
    }
  }
  EXPECT_EQ(*c->Lookup(keys), keys.size());
  ExpectReadsBack(*c, keys, kv);
  auto stats = c->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->tenant_blocks, 2 * keys.size());  // every copy counted
  // Tiers summed by name over the three servers.
  ASSERT_EQ(stats->tiers.size(), 2u);
  EXPECT_EQ(stats->tiers[0].name, "dram");
  EXPECT_EQ(stats->tiers[1].entries, 2 * keys.size());
  EXPECT_EQ(stats->blocks, 2 * keys.size());
}

TEST_F(ClusterTest, SurvivesSigkillAndReadRepairRestoresTheServer) {
  StartServers(3);
  auto c = Connect({});
  ASSERT_NE(c, nullptr);
  const Geometry g = SmallGeometry();
  const auto keys = Keys(40, 2);
  const Kv kv = MakeKv(40 * kBlockTokens, 2);
  ASSERT_TRUE(Offload(*c, keys, kv).ok());
  // Sessions with a tail: 2 blocks + 5 tokens each.
  const Kv skv = MakeKv(2 * kBlockTokens + 5, 3);
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    SessionSpec spec;
    spec.session_id = absl::StrCat("chat-", i);
    spec.geometry = g;
    spec.codec = "fp16";
    spec.blocks = Keys(2, 100 + i);
    spec.token_count = 2 * kBlockTokens + 5;
    ASSERT_TRUE(c->OffloadSession(spec, skv.View()).ok()) << spec.session_id;
    ids.push_back(spec.session_id);
  }

  servers_[1]->Kill();
  // A miss is a miss, though one server cannot answer.
  auto missing = c->Lookup(Keys(5, 999));
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(*missing, 0u);
  EXPECT_EQ(*c->Lookup(keys), keys.size());
  ExpectReadsBack(*c, keys, kv);
  for (const std::string& id : ids) {
    Out out(2 * kBlockTokens + 5);
    auto info = c->ResumeSession(id, out.View());
    ASSERT_TRUE(info.ok()) << id << ": " << info.status();
    EXPECT_EQ(info->committed_prefix, 2u);
    EXPECT_TRUE(out.k == skv.k && out.v == skv.v) << id;
  }
  auto listed = c->ListSessions();
  ASSERT_FALSE(listed.ok());  // a server that cannot answer is not silently skipped
  EXPECT_THAT(std::string(listed.status().message()), HasSubstr(servers_[1]->target()));
  // The dead server is ejected.
  EXPECT_TRUE(Eventually([&] { return !c->Servers()[1].healthy; }));

  // Writes while it is down go to the next servers in rendezvous order.
  const auto more = Keys(20, 4);
  const Kv more_kv = MakeKv(20 * kBlockTokens, 4);
  ASSERT_TRUE(Offload(*c, more, more_kv).ok());
  ExpectReadsBack(*c, more, more_kv);

  // Back on the same data dir: its old blocks are there; the ones written
  // while it was away are repaired into it by the next read.
  ASSERT_TRUE(servers_[1]->Restart().ok());
  ASSERT_TRUE(Eventually([&] { return c->Servers()[1].healthy; }, kReadmitTimeout));
  ExpectReadsBack(*c, keys, kv);
  ExpectReadsBack(*c, more, more_kv);
  size_t repaired = 0;
  for (const BlockKey& key : more) {
    const std::vector<size_t> want = Placement(key, Targets(), 2);
    if (std::find(want.begin(), want.end(), 1) == want.end()) continue;
    EXPECT_TRUE(Eventually([&] { return Holds(1, key); })) << "block not repaired";
    ++repaired;
  }
  EXPECT_GT(repaired, 0u);
  auto all = c->ListSessions();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, ids);
  for (const std::string& id : ids) EXPECT_TRUE(c->DeleteSession(id).ok()) << id;
  EXPECT_EQ(c->GetSession(ids[0]).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClusterTest, SigstopMidStreamWritesMeetQuorumOrFailCleanly) {
  StartServers(3);
  ClientOptions o;
  o.write_quorum = 1;
  o.deadline = absl::Seconds(3);
  o.replica_deadline = absl::Milliseconds(500);
  auto c = Connect(o);
  ASSERT_NE(c, nullptr);
  constexpr int kBatches = 12, kPerBatch = 8;
  std::vector<std::vector<BlockKey>> keys;
  std::vector<Kv> kvs;
  for (int b = 0; b < kBatches; ++b) {
    keys.push_back(Keys(kPerBatch, 1000 + b));
    kvs.push_back(MakeKv(kPerBatch * kBlockTokens, 1000 + b));
  }
  std::vector<absl::Status> results(kBatches);
  std::atomic<int> finished{0};
  std::thread writer([&] {
    for (int b = 0; b < kBatches; ++b) {
      results[b] = Offload(*c, keys[b], kvs[b]);
      finished.fetch_add(1);
    }
  });
  while (finished.load() < 3) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE(servers_[2]->Signal(SIGSTOP).ok());
  writer.join();
  int ok = 0;
  for (int b = 0; b < kBatches; ++b) {
    if (results[b].ok()) {
      ++ok;
      // Acknowledged: reads back now, with the server still stopped.
      ExpectReadsBack(*c, keys[b], kvs[b]);
    } else {
      EXPECT_THAT(results[b].code(), ::testing::AnyOf(absl::StatusCode::kUnavailable,
                                                      absl::StatusCode::kDeadlineExceeded))
          << results[b];
    }
  }
  // With a quorum of one, the two live replicas carry every write.
  EXPECT_EQ(ok, kBatches);
  ASSERT_TRUE(servers_[2]->Signal(SIGCONT).ok());
  ASSERT_TRUE(Eventually([&] { return c->Servers()[2].healthy; }));
  for (int b = 0; b < kBatches; ++b) {
    if (results[b].ok()) ExpectReadsBack(*c, keys[b], kvs[b]);
  }
}

TEST_F(ClusterTest, AServerDyingUnnoticedMidCallHandsItsPagesToTheNextCandidate) {
  StartServers(3);
  ClientOptions o;  // quorum of all: every block needs two acknowledgements
  o.deadline = absl::Seconds(5);
  auto c = Connect(o);
  ASSERT_NE(c, nullptr);
  // No health check runs in between: the client learns of the death from
  // the write itself.
  servers_[0]->Kill();
  const auto keys = Keys(30, 12);
  const Kv kv = MakeKv(30 * kBlockTokens, 12);
  ASSERT_TRUE(Offload(*c, keys, kv).ok());
  size_t rerouted = 0;
  for (const BlockKey& key : keys) {
    EXPECT_TRUE(Holds(1, key) && Holds(2, key)) << "a block lacks one of its two live copies";
    const std::vector<size_t> want = Placement(key, Targets(), 2);
    rerouted += std::find(want.begin(), want.end(), 0) != want.end();
  }
  EXPECT_GT(rerouted, 0u);  // some blocks were placed on the dead server
  ExpectReadsBack(*c, keys, kv);
}

TEST_F(ClusterTest, QuorumOfAllFailsCleanlyWhenAReplicaCannotBeReached) {
  StartServers(2);
  ClientOptions o;  // R = 2 over 2 servers, quorum all: every block needs both
  o.deadline = absl::Seconds(3);
  auto c = Connect(o);
  ASSERT_NE(c, nullptr);
  servers_[1]->Kill();
  const auto keys = Keys(4, 7);
  const absl::Status s = Offload(*c, keys, MakeKv(4 * kBlockTokens, 7));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("write quorum 2"));
  // What reached the live server stays there, readable.
  EXPECT_TRUE(Holds(0, keys[0]));
}

TEST_F(ClusterTest, AddingAFourthServerMovesAboutAQuarterOfTheCopies) {
  StartServers(3);
  auto c = Connect({});
  ASSERT_NE(c, nullptr);
  constexpr int kBlocks = 240;
  const auto keys = Keys(kBlocks, 9);
  const Kv kv = MakeKv(kBlocks * kBlockTokens, 9);
  ASSERT_TRUE(Offload(*c, keys, kv).ok());
  const std::vector<std::string> before = Targets();
  StartServers(1);
  const std::vector<std::string> after = Targets();
  ASSERT_TRUE(c->SetServers(after).ok());
  size_t moved = 0;
  for (const BlockKey& key : keys) {
    const std::vector<size_t> old_set = Placement(key, before, 2);
    const std::vector<size_t> new_set = Placement(key, after, 2);
    for (size_t s : new_set) {
      if (std::find(old_set.begin(), old_set.end(), s) != old_set.end()) continue;
      EXPECT_EQ(s, 3u) << "a copy moved between old servers";
      ++moved;
    }
  }
  const double fraction = double(moved) / (2.0 * kBlocks);
  EXPECT_GT(fraction, 0.17);
  EXPECT_LT(fraction, 0.33);
  // Every block still reads back (found on its old replicas), and the reads
  // copy to the new server exactly the blocks placed on it.
  ExpectReadsBack(*c, keys, kv);
  size_t on_new = 0;
  for (const BlockKey& key : keys) {
    const std::vector<size_t> new_set = Placement(key, after, 2);
    if (std::find(new_set.begin(), new_set.end(), 3) == new_set.end()) continue;
    EXPECT_TRUE(Eventually([&] { return Holds(3, key); }));
    ++on_new;
  }
  EXPECT_EQ(on_new, moved);
  for (const BlockKey& key : keys) {
    const std::vector<size_t> new_set = Placement(key, after, 2);
    if (std::find(new_set.begin(), new_set.end(), 3) == new_set.end()) {
      EXPECT_FALSE(Holds(3, key)) << "a block not placed on the new server was copied there";
    }
  }
}

TEST_F(ClusterTest, DiscoveryNamesServersByTheirReverseName) {
  StartServers(1);
  ClientOptions o;
  o.discovery = servers_[0]->target();  // 127.0.0.1:<port>
  auto c = Connect(o);
  ASSERT_NE(c, nullptr);
  const auto servers = c->Servers();
  ASSERT_EQ(servers.size(), 1u);
  EXPECT_EQ(servers[0].address, servers_[0]->target());
  EXPECT_EQ(servers[0].name, absl::StrCat("localhost:", servers_[0]->port()));
  const auto keys = Keys(3, 11);
  const Kv kv = MakeKv(3 * kBlockTokens, 11);
  ASSERT_TRUE(Offload(*c, keys, kv).ok());
  ExpectReadsBack(*c, keys, kv);
  EXPECT_EQ(c->SetServers({"127.0.0.1:1"}).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ClusterOptionsTest, BadOptionsNameTheirField) {
  auto expect = [](ClientOptions o, std::string_view field) {
    auto c = Client::Create(std::move(o));
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(std::string(field)));
  };
  ClientOptions both;
  both.target = "127.0.0.1:1";
  both.servers = {"127.0.0.1:2"};
  expect(both, "options.target");
  ClientOptions none;
  expect(none, "options.target");
  ClientOptions r;
  r.servers = {"a:1", "b:1"};
  r.replicas = 17;
  expect(r, "options.replicas");
  ClientOptions w;
  w.servers = {"a:1", "b:1"};
  w.replicas = 2;
  w.write_quorum = 3;
  expect(w, "options.write_quorum");
  ClientOptions bad;
  bad.servers = {"a:1", "b 1"};
  expect(bad, "options.servers[1]");
  ClientOptions dup;
  dup.servers = {"a:1", "a:1"};
  expect(dup, "servers: 'a:1' is listed twice");
  ClientOptions d;
  d.discovery = "no-port";
  expect(d, "discovery");

  ClientOptions ok;
  ok.servers = {"127.0.0.1:1", "127.0.0.1:2"};
  auto c = Client::Create(ok);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->SetServers({}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*c)->SetServers({"x:1", "x:1"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*c)->Servers().size(), 2u);  // a failed SetServers changes nothing
}

}  // namespace
}  // namespace qaqkv::client
