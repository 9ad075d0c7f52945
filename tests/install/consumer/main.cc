// Offloads a small KV cache to a running qaqkv-server and loads it back
// through the installed client library; exits 0 when every value matches.
//   consumer 127.0.0.1:7070
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "qaqkv/client.h"
#include "qaqkv/limits.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer HOST:PORT\n");
    return 2;
  }
  using qaqkv::client::Client;
  qaqkv::client::ClientOptions options;
  options.target = argv[1];
  auto client = Client::Create(options);
  if (!client.ok()) {
    std::fprintf(stderr, "consumer: %s\n", client.status().ToString().c_str());
    return 1;
  }
  const qaqkv::client::Geometry g{.num_layers = 2, .num_kv_heads = 2, .num_q_heads = 4,
                                  .head_dim = 64, .block_tokens = 16};
  constexpr int kBlocks = 3;
  const int tokens = kBlocks * g.block_tokens;
  std::vector<int32_t> ids(tokens);
  for (int i = 0; i < tokens; ++i) ids[i] = 1000 + i;
  const std::vector<qaqkv::client::BlockKey> keys =
      Client::ComputeBlockKeys("consumer-model", "fp16", ids, g.block_tokens);
  // fp16 bit patterns of small random values; fp16 is stored exactly.
  std::mt19937 rng(7);
  std::vector<std::vector<uint16_t>> k(g.num_layers), v(g.num_layers);
  qaqkv::client::HostKv in;
  for (int l = 0; l < g.num_layers; ++l) {
    for (auto* t : {&k[l], &v[l]}) {
      t->resize(size_t(tokens) * g.num_kv_heads * g.head_dim);
      for (uint16_t& x : *t) x = static_cast<uint16_t>(0x3000 + rng() % 0x0800);
    }
    in.k.push_back(k[l].data());
    in.v.push_back(v[l].data());
  }
  auto offloaded = (*client)->Offload({.geometry = g, .codec = "fp16", .blocks = keys, .kv = in});
  if (!offloaded.ok()) {
    std::fprintf(stderr, "consumer: offload: %s\n", offloaded.status().ToString().c_str());
    return 1;
  }
  auto cached = (*client)->Lookup(keys);
  std::vector<std::vector<uint16_t>> k2(g.num_layers), v2(g.num_layers);
  qaqkv::client::MutableHostKv out;
  for (int l = 0; l < g.num_layers; ++l) {
    k2[l].assign(k[l].size(), 0);
    v2[l].assign(v[l].size(), 0);
    out.k.push_back(k2[l].data());
    out.v.push_back(v2[l].data());
  }
  auto loaded = (*client)->Load({.geometry = g, .codec = "fp16", .blocks = keys, .kv = out});
  if (!cached.ok() || !loaded.ok()) {
    std::fprintf(stderr, "consumer: lookup/load: %s %s\n", cached.status().ToString().c_str(),
                 loaded.status().ToString().c_str());
    return 1;
  }
  for (int l = 0; l < g.num_layers; ++l) {
    if (k2[l] != k[l] || v2[l] != v[l]) {
      std::fprintf(stderr, "consumer: layer %d differs after the round trip\n", l);
      return 1;
    }
  }
  std::printf("consumer: ok, %zu blocks cached of %d, %llu pages loaded (session ids up to %zu bytes)\n",
              *cached, kBlocks, static_cast<unsigned long long>(loaded->pages),
              qaqkv::limits::kMaxSessionIdBytes);
  return *cached == kBlocks ? 0 : 1;
}
