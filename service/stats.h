// The one mapping from the store's figures (storage::StoreStats) to what the
// server reports: GetStatsResponse for a caller and the Prometheus families
// of /metrics. Both come from the same struct in the same place, so the two
// never disagree about what a number means.
#ifndef QAQKV_SERVICE_STATS_H_
#define QAQKV_SERVICE_STATS_H_

#include <string>
#include <utility>
#include <vector>

#include "qaqkv/v1/kvcache.pb.h"
#include "storage/tiered_store.h"

namespace qaqkv::service {

// Fills the server-wide fields of a GetStats answer: every tier by name,
// `dram` and `disk` for older clients, totals and counters. The caller adds
// its tenant's usage and the version.
void FillStats(const storage::StoreStats& stats, v1::GetStatsResponse* out);

// Appends the store's Prometheus families: per tier (hits, misses,
// evictions, bytes, budget, entries), checksum failures, background errors,
// blocks, and each tenant's usage.
void RenderStoreMetrics(const storage::StoreStats& stats,
                        const std::vector<std::pair<std::string, storage::TenantUsage>>& tenants,
                        std::string& out);

// Appends qaqkv_ready: 1 while the server serves and its disk takes
// writes (what /readyz and the KvCache health status say).
void RenderReadiness(bool ready, std::string& out);

}  // namespace qaqkv::service

#endif  // QAQKV_SERVICE_STATS_H_
