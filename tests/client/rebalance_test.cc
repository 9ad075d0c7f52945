// Client::Rebalance against real qaqkv-server processes on loopback: a
// server lost for good, a server added (3 -> 4), a server drained and
// removed (4 -> 3), and sessions deleted while a server was away. Each test
// checks where every copy is afterwards, server by server, and that every
// read succeeds.

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qaqkv/client.h"
#include "tests/client/cluster_fixture.h"
#include "tests/client/test_kv.h"

namespace qaqkv::client {
namespace {

using ::testing::HasSubstr;
using testing::ClusterTest;
using testing::kBlockTokens;
using testing::Keys;
using testing::Kv;
using testing::MakeKv;
using testing::Out;
using testing::SmallGeometry;

bool Contains(const std::vector<size_t>& v, size_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

class RebalanceTest : public ClusterTest {
 protected:
  // Sessions of 2 blocks plus a 5-token tail, saved through `c`.
  std::vector<std::string> SaveSessions(Client& c, int n, int seed, const Kv& kv) {
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      SessionSpec spec;
      spec.session_id = absl::StrCat("chat-", seed, "-", i);
      spec.geometry = SmallGeometry();
      spec.codec = "fp16";
      spec.blocks = Keys(2, seed * 100 + i);
      spec.token_count = 2 * kBlockTokens + 5;
      EXPECT_TRUE(c.OffloadSession(spec, kv.View()).ok()) << spec.session_id;
      ids.push_back(spec.session_id);
    }
    return ids;
  }
  // A client of server `i` alone.
  std::unique_ptr<Client> Only(size_t i) {
    ClientOptions o;
    o.target = servers_[i]->target();
    o.retry.max_attempts = 1;
    return Connect(o);
  }
  bool HasSession(size_t i, const std::string& id) {
    std::unique_ptr<Client> c = Only(i);
    return c != nullptr && c->GetSession(id).ok();
  }
  std::vector<std::string> Subset(std::initializer_list<size_t> which) const {
    std::vector<std::string> out;
    for (size_t i : which) out.push_back(servers_[i]->target());
    return out;
  }
  // Every block on exactly its R owners among `members` (indices into
  // servers_), and on none of `others`.
  void ExpectPlaced(const std::vector<BlockKey>& keys, const std::vector<size_t>& members,
                    const std::vector<size_t>& others) {
    std::vector<std::string> names;
    for (size_t m : members) names.push_back(servers_[m]->target());
    for (const BlockKey& key : keys) {
      const std::vector<size_t> owners = Placement(key, names, 2);
      for (size_t j = 0; j < members.size(); ++j) {
        EXPECT_EQ(Holds(members[j], key), Contains(owners, j)) << "server " << members[j];
      }
      for (size_t o : others) EXPECT_FALSE(Holds(o, key)) << "server " << o << " kept a copy";
    }
  }
  // Copies that placement over `after` puts on a server that did not hold
  // them under `before`: what a rebalance must copy when every write went
  // to its owners.
  static size_t MovedCopies(const std::vector<BlockKey>& keys,
                            const std::vector<std::string>& before,
                            const std::vector<std::string>& after) {
    size_t moved = 0;
    for (const BlockKey& key : keys) {
      const std::vector<size_t> old_set = Placement(key, before, 2);
      for (size_t s : Placement(key, after, 2)) {
        moved += !Contains(old_set, std::find(before.begin(), before.end(), after[s]) -
                                        before.begin());
      }
    }
    return moved;
  }
  // What a rebalance over `members` (indices into servers_) must do from
  // where the copies are now: the owners' missing copies, and the copies
  // on running servers that are not owners. Under load the client may have
  // ejected a slow server while writing and given its copies to the next
  // candidates, so where copies landed is read back, not assumed.
  struct Work {
    size_t copies = 0, removals = 0;
  };
  Work Pending(const std::vector<BlockKey>& keys, const std::vector<size_t>& members) {
    std::vector<std::string> names;
    for (size_t m : members) names.push_back(servers_[m]->target());
    Work work;
    for (const BlockKey& key : keys) {
      std::vector<size_t> owners;
      for (size_t j : Placement(key, names, 2)) owners.push_back(members[j]);
      for (size_t s = 0; s < servers_.size(); ++s) {
        if (!servers_[s]->running()) continue;
        const bool holds = Holds(s, key);
        if (Contains(owners, s) && !holds) ++work.copies;
        if (!Contains(owners, s) && holds) ++work.removals;
      }
    }
    return work;
  }
  void ExpectResumes(Client& c, const std::vector<std::string>& ids, const Kv& kv) {
    for (const std::string& id : ids) {
      Out out(2 * kBlockTokens + 5);
      auto info = c.ResumeSession(id, out.View());
      ASSERT_TRUE(info.ok()) << id << ": " << info.status();
      EXPECT_TRUE(out.k == kv.k && out.v == kv.v) << id;
    }
  }
};

// Three servers, one lost for good: the rebalance over the two left copies
// every block and session the lost one held to the other, so each is on
// both (R = 2), and every read succeeds. A second run finds nothing to do.
TEST_F(RebalanceTest, AServerLostForGoodGetsItsCopiesRestored) {
  StartServers(3);
  auto c = Connect({});
  ASSERT_NE(c, nullptr);
  const auto keys = Keys(60, 1);
  const Kv kv = MakeKv(60 * kBlockTokens, 1);
  ASSERT_TRUE(Offload(*c, keys, kv).ok());
  const Kv skv = MakeKv(2 * kBlockTokens + 5, 2);
  const std::vector<std::string> ids = SaveSessions(*c, 6, 2, skv);
  size_t lost_copies = 0;
  for (const BlockKey& key : keys) lost_copies += Contains(Placement(key, Targets(), 2), 2);
  // Session blocks are blocks too: count those the lost server held.
  for (int i = 0; i < 6; ++i) {
    for (const BlockKey& key : Keys(2, 200 + i)) lost_copies += Holds(2, key);
  }

  servers_[2]->Kill();
  ClientOptions o;
  o.servers = Subset({0, 1});
  auto left = Connect(o);
  ASSERT_NE(left, nullptr);
  std::vector<Client::RebalanceReport> seen;
  auto report = left->Rebalance({}, [&](const Client::RebalanceReport& r) { seen.push_back(r); });
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->errors, 0u) << report->first_error;
  EXPECT_EQ(report->blocks, keys.size() + 12);
  EXPECT_EQ(report->blocks_copied, lost_copies);
  EXPECT_EQ(report->blocks_removed, 0u);
  EXPECT_EQ(report->sessions, ids.size());
  EXPECT_GT(report->sessions_copied, 0u);
  EXPECT_FALSE(seen.empty());
  for (const BlockKey& key : keys) {
    EXPECT_TRUE(Holds(0, key) && Holds(1, key)) << "a block has fewer than 2 copies";
  }
  for (const std::string& id : ids) EXPECT_TRUE(HasSession(0, id) && HasSession(1, id)) << id;
  ExpectReadsBack(*left, keys, kv);
  ExpectResumes(*left, ids, skv);

  auto again = left->Rebalance({});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->blocks_copied, 0u);
  EXPECT_EQ(again->sessions_copied, 0u);
  EXPECT_EQ(again->blocks_removed, 0u);
}

// 3 -> 4: exactly the copies rendezvous hashing gives the new server are
// copied to it, and removed from the server that held them; every server
// then holds exactly its placement.
TEST_F(RebalanceTest, ScaleUpMovesOnlyWhatRendezvousHashingMoves) {
  StartServers(3);
  auto c = Connect({});
  ASSERT_NE(c, nullptr);
  constexpr int kBlocks = 120;
  const auto keys = Keys(kBlocks, 3);
  const Kv kv = MakeKv(kBlocks * kBlockTokens, 3);
  ASSERT_TRUE(Offload(*c, keys, kv).ok());
  const std::vector<std::string> before = Targets();
  StartServers(1);
  const std::vector<std::string> after = Targets();
  const size_t moved = MovedCopies(keys, before, after);
  ASSERT_GT(moved, 0u);
  const Work work = Pending(keys, {0, 1, 2, 3});
  if (work.copies != moved) {
    std::printf("writes did not all reach their owners: %zu copies to make, %zu if they had\n",
                work.copies, moved);
  }
  ASSERT_TRUE(c->SetServers(after).ok());
  Client::RebalanceOptions options;
  options.batch_blocks = 16;  // several copy streams per route
  auto report = c->Rebalance(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->errors, 0u) << report->first_error;
  EXPECT_EQ(report->blocks, size_t{kBlocks});
  EXPECT_EQ(report->blocks_copied, work.copies);
  EXPECT_EQ(report->blocks_removed, work.removals);
  ExpectPlaced(keys, {0, 1, 2, 3}, {});
  ExpectReadsBack(*c, keys, kv);
}

// 4 -> 3 with a drain first: the leaving server's copies go to their new
// owners, it keeps nothing, and once it is gone every read succeeds.
TEST_F(RebalanceTest, ScaleDownDrainsTheLeavingServerFirst) {
  StartServers(4);
  auto c = Connect({});
  ASSERT_NE(c, nullptr);
  constexpr int kBlocks = 120;
  const auto keys = Keys(kBlocks, 4);
  const Kv kv = MakeKv(kBlocks * kBlockTokens, 4);
  ASSERT_TRUE(Offload(*c, keys, kv).ok());
  const Kv skv = MakeKv(2 * kBlockTokens + 5, 5);
  const std::vector<std::string> ids = SaveSessions(*c, 8, 5, skv);
  const std::vector<std::string> before = Targets();
  const std::vector<std::string> after = Subset({0, 1, 2});
  std::vector<BlockKey> every = keys;  // the sessions' blocks move too
  for (int i = 0; i < 8; ++i) {
    for (const BlockKey& k : Keys(2, 500 + i)) every.push_back(k);
  }
  const size_t moved = MovedCopies(every, before, after);
  const Work work = Pending(every, {0, 1, 2});
  ASSERT_GT(work.copies, 0u);
  if (work.copies != moved) {
    std::printf("writes did not all reach their owners: %zu copies to make, %zu if they had\n",
                work.copies, moved);
  }
  ClientOptions o;
  o.servers = after;
  auto three = Connect(o);
  ASSERT_NE(three, nullptr);
  Client::RebalanceOptions options;
  options.draining = {servers_[3]->target()};
  auto report = three->Rebalance(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->errors, 0u) << report->first_error;
  EXPECT_EQ(report->blocks, every.size());
  EXPECT_EQ(report->blocks_copied, work.copies);
  EXPECT_EQ(report->blocks_removed, work.removals);
  ExpectPlaced(keys, {0, 1, 2}, {3});
  for (const std::string& id : ids) EXPECT_FALSE(HasSession(3, id)) << id << " left on it";

  servers_[3]->Kill();
  ExpectReadsBack(*three, keys, kv);
  ExpectResumes(*three, ids, skv);
  auto listed = three->ListSessions();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(*listed, ids);
}

// Sessions deleted while a server was away: when it returns with its old
// copies, reads do not serve them and the rebalance deletes them there.
// A session put again after its deletion is the newer one, and is copied.
TEST_F(RebalanceTest, SessionsDeletedWhileAServerWasAwayDoNotComeBack) {
  StartServers(3);
  ClientOptions fast;
  fast.replica_deadline = absl::Milliseconds(500);  // the away server costs this per call
  auto c = Connect(fast);
  ASSERT_NE(c, nullptr);
  const Kv skv = MakeKv(2 * kBlockTokens + 5, 6);
  const std::vector<std::string> ids = SaveSessions(*c, 8, 6, skv);
  std::vector<std::string> on_away;
  for (const std::string& id : ids) {
    if (HasSession(1, id)) on_away.push_back(id);
  }
  ASSERT_FALSE(on_away.empty());

  servers_[1]->Kill();
  for (const std::string& id : ids) {
    // The away server may hold a copy, so the client says the delete is
    // not complete; the others keep tombstones.
    const absl::Status deleted = c->DeleteSession(id);
    EXPECT_EQ(deleted.code(), absl::StatusCode::kUnavailable) << id;
    EXPECT_THAT(std::string(deleted.message()), HasSubstr("retry the delete"));
  }
  // The last one comes back: saved again while the server is away.
  const std::string again = ids.back();
  {
    SessionSpec spec;
    spec.session_id = again;
    spec.geometry = SmallGeometry();
    spec.codec = "fp16";
    spec.blocks = Keys(2, 600 + 7);
    spec.token_count = 2 * kBlockTokens + 5;
    ASSERT_TRUE(c->OffloadSession(spec, skv.View()).ok());
  }

  ASSERT_TRUE(servers_[1]->Restart().ok());
  ASSERT_TRUE(Eventually([&] { return c->Servers()[1].healthy; }, kReadmitTimeout));
  for (const std::string& id : on_away) {
    if (id == again) continue;
    EXPECT_TRUE(HasSession(1, id)) << "the returning server lost its copy of " << id;
    EXPECT_EQ(c->GetSession(id).status().code(), absl::StatusCode::kNotFound) << id;
  }
  auto report = c->Rebalance({});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->errors, 0u) << report->first_error;
  for (const std::string& id : ids) {
    if (id == again) continue;
    for (size_t s = 0; s < 3; ++s) EXPECT_FALSE(HasSession(s, id)) << id << " on " << s;
  }
  auto listed = c->ListSessions();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(*listed, std::vector<std::string>{again});
  ExpectResumes(*c, {again}, skv);
  // The newer session is on both its owners.
  size_t copies = 0;
  for (size_t s = 0; s < 3; ++s) copies += HasSession(s, again);
  EXPECT_EQ(copies, 2u);
}

// A rolling restart under steady traffic at R = 2: each server in turn is
// drained (SIGTERM) and started again on its data while a worker keeps
// writing new blocks and reading old and new ones. No read fails: a
// block's other replica serves it while one is away, and blocks written
// meanwhile are found on the next candidates. A rebalance afterwards puts
// those back on their owners.
TEST_F(RebalanceTest, RollingRestartUnderTrafficFailsNoRead) {
  StartServers(3);
  auto c = Connect({});
  ASSERT_NE(c, nullptr);
  const auto base = Keys(24, 8);
  const Kv base_kv = MakeKv(24 * kBlockTokens, 8);
  ASSERT_TRUE(Offload(*c, base, base_kv).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, failed_reads{0}, writes{0}, failed_writes{0};
  std::mutex mu;
  std::vector<std::string> failures;  // guarded by mu
  std::vector<std::vector<BlockKey>> written;  // touched only by the worker until joined
  const Kv kv = MakeKv(4 * kBlockTokens, 9);
  std::thread worker([&] {
    for (int round = 0; !stop.load(); ++round) {
      const auto keys = Keys(4, 1000 + round);
      OffloadRequest off;
      off.geometry = SmallGeometry();
      off.codec = "fp16";
      off.blocks = keys;
      off.kv = kv.View();
      ++writes;
      if (absl::Status s = c->Offload(off).status(); !s.ok()) {
        ++failed_writes;
        std::lock_guard<std::mutex> lock(mu);
        failures.push_back(absl::StrCat("write: ", s.ToString()));
      } else {
        written.push_back(keys);
      }
      // The newest blocks, an older batch, and the first ones.
      std::vector<std::pair<const std::vector<BlockKey>*, const Kv*>> loads = {{&base, &base_kv}};
      if (!written.empty()) loads.push_back({&written.back(), &kv});
      if (written.size() > 2) loads.push_back({&written[written.size() / 2], &kv});
      for (const auto& [blocks, want] : loads) {
        Out out(static_cast<int>(want->tokens()));
        LoadRequest load;
        load.geometry = SmallGeometry();
        load.codec = "fp16";
        load.blocks = *blocks;
        load.kv = out.View();
        ++reads;
        absl::Status s = c->Load(load).status();
        if (s.ok() && !(out.k == want->k && out.v == want->v)) {
          s = absl::DataLossError("loaded bytes differ");
        }
        if (!s.ok()) {
          ++failed_reads;
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back(absl::StrCat("read: ", s.ToString()));
        }
      }
    }
  });
  for (size_t i = 0; i < servers_.size(); ++i) {
    absl::SleepFor(absl::Milliseconds(300));
    ASSERT_TRUE(servers_[i]->Terminate().ok());
    absl::SleepFor(absl::Milliseconds(500));  // traffic while it is away
    ASSERT_TRUE(servers_[i]->Restart().ok());
    ASSERT_TRUE(Eventually([&] { return c->Servers()[i].healthy; }, kReadmitTimeout));
  }
  absl::SleepFor(absl::Milliseconds(300));
  stop = true;
  worker.join();
  EXPECT_GT(reads.load(), 3 * 3);
  EXPECT_EQ(failed_reads.load(), 0) << absl::StrJoin(failures, "\n");
  // Writes go to the replicas that are up (write quorum of the R chosen).
  EXPECT_EQ(failed_writes.load(), 0) << absl::StrJoin(failures, "\n");

  auto report = c->Rebalance({});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->errors, 0u) << report->first_error;
  for (const std::vector<BlockKey>& keys : written) ExpectPlaced(keys, {0, 1, 2}, {});
  ExpectPlaced(base, {0, 1, 2}, {});
}

// What a rebalance refuses: an unsharded client, a bad option, and a
// server that cannot be listed (before anything changes).
TEST_F(RebalanceTest, RefusesWhatItCannotDoSafely) {
  StartServers(2);
  auto one = Only(0);
  ASSERT_NE(one, nullptr);
  EXPECT_EQ(one->Rebalance({}).status().code(), absl::StatusCode::kFailedPrecondition);
  auto c = Connect({});
  ASSERT_NE(c, nullptr);
  Client::RebalanceOptions bad;
  bad.batch_blocks = 0;
  auto refused = c->Rebalance(bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("batch_blocks"));
  bad = {};
  bad.draining = {servers_[0]->target()};
  refused = c->Rebalance(bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("options.draining[0]"));

  const auto keys = Keys(8, 7);
  const Kv kv = MakeKv(8 * kBlockTokens, 7);
  ASSERT_TRUE(Offload(*c, keys, kv).ok());
  servers_[1]->Kill();
  ClientOptions o;
  o.servers = Targets();
  o.deadline = absl::Seconds(2);
  o.retry.max_attempts = 1;
  auto partial = Connect(o);
  ASSERT_NE(partial, nullptr);
  auto stopped = partial->Rebalance({});
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(stopped.status().message()), HasSubstr(servers_[1]->target()));
  for (const BlockKey& key : keys) EXPECT_TRUE(Holds(0, key));  // nothing removed
}

}  // namespace
}  // namespace qaqkv::client
