// Rendezvous (highest-random-weight) placement of block keys and session
// ids over cache servers (docs/design.md, Decisions): every client ranks the
// endpoints for a key by a hash of (key, endpoint) and uses the first R.
// Adding or removing a server moves only the keys whose top R it enters or
// leaves: about R/N of them, with no coordination between clients.
//
// The sharded, replicated client (cluster.h, sharded.cc) is built on this.
#ifndef QAQKV_CLIENT_INTERNAL_PLACEMENT_H_
#define QAQKV_CLIENT_INTERNAL_PLACEMENT_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qaqkv::client::internal {

// The weight of `endpoint` for `key`: XXH3-64 of the key seeded with the
// endpoint's own hash, so it depends on both and on nothing else (not on
// the order or number of endpoints).
uint64_t RendezvousWeight(std::string_view key, uint64_t endpoint_hash);
uint64_t EndpointHash(std::string_view endpoint);

// Indices into `endpoint_hashes`, highest weight first, at most `replicas`
// (all when replicas >= the count). Ties (never in practice) go to the
// lower index, so the order is total and the same on every client.
std::vector<size_t> RankEndpoints(std::string_view key, std::span<const uint64_t> endpoint_hashes,
                                  size_t replicas);

}  // namespace qaqkv::client::internal

#endif  // QAQKV_CLIENT_INTERNAL_PLACEMENT_H_
