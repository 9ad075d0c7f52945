#include "client/internal/placement.h"

#include <algorithm>
#include <numeric>

#include "xxhash.h"

namespace qaqkv::client::internal {

uint64_t EndpointHash(std::string_view endpoint) {
  return XXH3_64bits(endpoint.data(), endpoint.size());
}

uint64_t RendezvousWeight(std::string_view key, uint64_t endpoint_hash) {
  return XXH3_64bits_withSeed(key.data(), key.size(), endpoint_hash);
}

std::vector<size_t> RankEndpoints(std::string_view key, std::span<const uint64_t> endpoint_hashes,
                                  size_t replicas) {
  std::vector<uint64_t> weight(endpoint_hashes.size());
  for (size_t i = 0; i < endpoint_hashes.size(); ++i) {
    weight[i] = RendezvousWeight(key, endpoint_hashes[i]);
  }
  std::vector<size_t> order(endpoint_hashes.size());
  std::iota(order.begin(), order.end(), size_t{0});
  const size_t n = std::min(replicas, order.size());
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](size_t a, size_t b) {
    return weight[a] != weight[b] ? weight[a] > weight[b] : a < b;
  });
  order.resize(n);
  return order;
}

}  // namespace qaqkv::client::internal
