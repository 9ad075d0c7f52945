// A cluster of real qaqkv-server processes on loopback for the sharded
// client's tests (cluster_test.cc, rebalance_test.cc): each server with its
// own RocksDB in a temporary directory and a fixed port, so a restarted
// server is the same cluster member.
#ifndef QAQKV_TESTS_CLIENT_CLUSTER_FIXTURE_H_
#define QAQKV_TESTS_CLIENT_CLUSTER_FIXTURE_H_

#include <algorithm>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/child_process.h"
#include "client/internal/placement.h"
#include "gtest/gtest.h"
#include "qaqkv/client.h"
#include "tests/client/test_kv.h"
#include "tests/service/server_process.h"

namespace qaqkv::client::testing {

using service::testing::ServerProcess;

// Distinct keys per `seed`: block keys of a synthetic token sequence.
inline std::vector<BlockKey> Keys(int blocks, int seed) {
  std::vector<int32_t> tokens(size_t(blocks) * kBlockTokens);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7 + seed * 7919) % 32000);
  return Client::ComputeBlockKeys(absl::StrCat("model-", seed), "fp16", tokens, kBlockTokens);
}

inline std::string KeyView(const BlockKey& k) {
  return std::string(reinterpret_cast<const char*>(k.data()), k.size());
}

class ClusterTest : public ::testing::Test {
 protected:
  void StartServers(int n) {
    for (int i = 0; i < n; ++i) {
      auto& s = servers_.emplace_back(std::make_unique<ServerProcess>());
      // A fixed port, so a restarted server is the same cluster member.
      const absl::StatusOr<int> free = base::FreeLoopbackPort();
      ASSERT_TRUE(free.ok()) << free.status();
      auto port = s->Start({absl::StrCat("--listen=127.0.0.1:", *free)});
      ASSERT_TRUE(port.ok()) << port.status();
    }
  }
  std::vector<std::string> Targets() const {
    std::vector<std::string> t;
    for (const auto& s : servers_) t.push_back(s->target());
    return t;
  }
  std::unique_ptr<Client> Connect(ClientOptions o) {
    if (o.target.empty() && o.discovery.empty() && o.servers.empty()) o.servers = Targets();
    o.encode_threads = 2;
    o.health_check_interval = absl::Milliseconds(100);
    o.retry.initial_backoff = absl::Milliseconds(20);
    o.retry.max_backoff = absl::Milliseconds(200);
    auto c = Client::Create(std::move(o));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  // A client of server `i` alone, to look inside the cluster.
  bool Holds(size_t i, const BlockKey& key) {
    ClientOptions o;
    o.target = servers_[i]->target();
    o.deadline = absl::Seconds(5);
    o.retry.max_attempts = 1;
    auto c = Client::Create(o);
    if (!c.ok()) return false;
    auto n = (*c)->Lookup(std::span<const BlockKey>(&key, 1));
    return n.ok() && *n == 1;
  }
  // Indices of the servers rendezvous hashing puts `key` on, among `names`.
  static std::vector<size_t> Placement(const BlockKey& key, const std::vector<std::string>& names,
                                       size_t replicas) {
    std::vector<uint64_t> hashes;
    for (const std::string& n : names) hashes.push_back(internal::EndpointHash(n));
    return internal::RankEndpoints(KeyView(key), hashes, replicas);
  }
  absl::Status Offload(Client& c, const std::vector<BlockKey>& keys, const Kv& kv) {
    OffloadRequest off;
    off.geometry = SmallGeometry();
    off.codec = "fp16";
    off.blocks = keys;
    off.kv = kv.View();
    return c.Offload(off).status();
  }
  // Loads `keys` through `c` and checks every byte against `kv`.
  void ExpectReadsBack(Client& c, const std::vector<BlockKey>& keys, const Kv& kv) {
    Out out(static_cast<int>(kv.tokens()));
    LoadRequest load;
    load.geometry = SmallGeometry();
    load.codec = "fp16";
    load.blocks = keys;
    load.kv = out.View();
    std::vector<int> layers;
    load.on_layer = [&](int l) { layers.push_back(l); };
    auto r = c.Load(load);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(layers.size(), size_t{kLayers});
    EXPECT_TRUE(out.k == kv.k && out.v == kv.v) << "loaded bytes differ";
  }
  // How long a server back from an absence may take to be probed again:
  // each failed probe while it was away doubled its ejection, up to 30 s
  // (client/internal/cluster.h), and under load it is away longer.
  static constexpr absl::Duration kReadmitTimeout = absl::Seconds(45);
  // Polls until `pred` holds, up to `timeout`.
  template <typename Pred>
  static bool Eventually(Pred pred, absl::Duration timeout = absl::Seconds(15)) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      if (pred()) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return pred();
  }

  std::vector<std::unique_ptr<ServerProcess>> servers_;
};

}  // namespace qaqkv::client::testing

#endif  // QAQKV_TESTS_CLIENT_CLUSTER_FIXTURE_H_
