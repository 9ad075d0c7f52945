// Small fp16 KV caches for the client tests: a 4-layer geometry, seeded
// random K/V in NHD, and output buffers pre-filled with NaN (0xffff) so a
// load that misses a value cannot pass.
#ifndef QAQKV_TESTS_CLIENT_TEST_KV_H_
#define QAQKV_TESTS_CLIENT_TEST_KV_H_

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/half.h"
#include "qaqkv/client.h"
#include "qaqkv/v1/kvcache.pb.h"

namespace qaqkv::client::testing {

inline constexpr int kLayers = 4, kKvHeads = 2, kHeadDim = 64, kBlockTokens = 16;

// 4 layers of 256-token blocks with 2 KV heads of 128: 256 KiB of fp16 K
// and V per page, the page size the service bench moves (a page spans
// several of gRPC's receive slices).
inline Geometry LargePageGeometry() {
  Geometry g;
  g.num_layers = 4;
  g.num_kv_heads = 2;
  g.num_q_heads = 4;
  g.head_dim = 128;
  g.block_tokens = 256;
  return g;
}

// `g` as the wire contract spells it (for the service's test helpers).
inline v1::Geometry ToWire(const Geometry& g) {
  v1::Geometry w;
  w.set_num_layers(g.num_layers);
  w.set_num_kv_heads(g.num_kv_heads);
  w.set_num_q_heads(g.num_q_heads);
  w.set_head_dim(g.head_dim);
  w.set_block_tokens(g.block_tokens);
  return w;
}

inline Geometry SmallGeometry(int layers = kLayers) {
  Geometry g;
  g.num_layers = layers;
  g.num_kv_heads = kKvHeads;
  g.num_q_heads = 4;
  g.head_dim = kHeadDim;
  g.block_tokens = kBlockTokens;
  return g;
}

// fp16 KV of `tokens` rows per layer in NHD.
struct Kv {
  std::vector<std::vector<uint16_t>> k, v;
  int64_t tokens() const { return static_cast<int64_t>(k[0].size() / (kKvHeads * kHeadDim)); }
  HostKv View() const {
    HostKv h;
    for (size_t l = 0; l < k.size(); ++l) {
      h.k.push_back(k[l].data());
      h.v.push_back(v[l].data());
    }
    h.tokens = tokens();
    return h;
  }
};

// Seeded normal values.
inline Kv MakeKv(int tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  Kv kv;
  for (int l = 0; l < kLayers; ++l) {
    auto& k = kv.k.emplace_back(size_t(tokens) * kKvHeads * kHeadDim);
    auto& v = kv.v.emplace_back(k.size());
    for (auto& x : k) x = ::qaqkv::FloatToHalf(normal(rng));
    for (auto& x : v) x = ::qaqkv::FloatToHalf(normal(rng));
  }
  return kv;
}

// Output buffers of `tokens` rows per layer, every value NaN.
struct Out : Kv {
  explicit Out(int tokens) {
    for (int l = 0; l < kLayers; ++l) {
      k.emplace_back(size_t(tokens) * kKvHeads * kHeadDim, 0xffff);
      v.emplace_back(size_t(tokens) * kKvHeads * kHeadDim, 0xffff);
    }
  }
  MutableHostKv View() {
    MutableHostKv h;
    for (int l = 0; l < kLayers; ++l) {
      h.k.push_back(k[l].data());
      h.v.push_back(v[l].data());
    }
    h.tokens = tokens();
    return h;
  }
};

// A client of one server (a failed Create fails the test and yields null).
inline std::unique_ptr<Client> Connect(const std::string& target, const std::string& token = "",
                                       absl::Duration deadline = absl::Seconds(60)) {
  ClientOptions o;
  o.target = target;
  o.bearer_token = token;
  o.deadline = deadline;
  o.encode_threads = 2;
  auto c = Client::Create(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

}  // namespace qaqkv::client::testing

#endif  // QAQKV_TESTS_CLIENT_TEST_KV_H_
