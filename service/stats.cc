#include "service/stats.h"

#include <cstdint>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "service/metrics.h"

namespace qaqkv::service {
namespace {

void ToProto(const storage::TierStats& t, v1::TierStats* p) {
  p->set_name(t.name);
  p->set_hits(t.hits);
  p->set_misses(t.misses);
  p->set_evictions(t.evictions);
  p->set_bytes(t.bytes);
  p->set_entries(t.entries);
  p->set_budget_bytes(t.budget_bytes);
}

// One Prometheus family per TierStats field, labelled by tier.
struct TierFamily {
  std::string_view name;
  std::string_view type;
  std::string_view help;
  uint64_t storage::TierStats::*field;
};
constexpr TierFamily kTierFamilies[] = {
    {"qaqkv_tier_hits_total", "counter", "Page reads served by a tier.", &storage::TierStats::hits},
    {"qaqkv_tier_misses_total", "counter", "Page reads that reached a tier and missed.",
     &storage::TierStats::misses},
    {"qaqkv_evictions_total", "counter",
     "DRAM entries and disk blocks evicted under their budgets.", &storage::TierStats::evictions},
    {"qaqkv_tier_bytes", "gauge", "Bytes a tier holds.", &storage::TierStats::bytes},
    {"qaqkv_tier_entries", "gauge", "Pages (DRAM) or blocks (disk) a tier holds.",
     &storage::TierStats::entries},
    {"qaqkv_tier_budget_bytes", "gauge", "Byte budget of a tier (0: none).",
     &storage::TierStats::budget_bytes},
};

}  // namespace

void FillStats(const storage::StoreStats& stats, v1::GetStatsResponse* out) {
  for (const storage::TierStats& t : stats.tiers) {
    ToProto(t, out->add_tiers());
    if (t.name == "dram") ToProto(t, out->mutable_dram());
    if (t.name == "disk") ToProto(t, out->mutable_disk());
  }
  out->set_blocks_evicted(stats.blocks_evicted);
  out->set_checksum_failures(stats.checksum_failures);
  out->set_total_bytes(stats.total_bytes);
  out->set_blocks(stats.blocks);
  out->set_background_errors(stats.background_errors);
}

void RenderStoreMetrics(const storage::StoreStats& stats,
                        const std::vector<std::pair<std::string, storage::TenantUsage>>& tenants,
                        std::string& out) {
  for (const TierFamily& f : kTierFamilies) {
    AppendFamily(out, f.name, f.type, f.help);
    for (const storage::TierStats& t : stats.tiers) {
      AppendSample(out, f.name, absl::StrCat("tier=\"", EscapeLabel(t.name), "\""),
                   static_cast<double>(t.*f.field));
    }
  }
  AppendFamily(out, "qaqkv_checksum_failures_total", "counter",
               "Stored pages that failed their checksum (never served).");
  AppendSample(out, "qaqkv_checksum_failures_total", "",
               static_cast<double>(stats.checksum_failures));
  AppendFamily(out, "qaqkv_background_errors_total", "counter",
               "Failed background passes of the store (maintenance, scans); each is logged.");
  AppendSample(out, "qaqkv_background_errors_total", "",
               static_cast<double>(stats.background_errors));
  struct Plain {
    const char* name;
    const char* type;
    const char* help;
    uint64_t value;
  };
  const Plain disk[] = {
      {"qaqkv_disk_file_bytes", "gauge",
       "Bytes of the disk tier's files: RocksDB's SST and blob files and the segment files.",
       stats.disk_file_bytes},
      {"qaqkv_segment_file_bytes", "gauge", "Bytes of the segment files holding page bytes.",
       stats.segment_file_bytes},
      {"qaqkv_segment_live_bytes", "gauge",
       "Segment bytes that stored pages still use (the rest is reclaimable garbage).",
       stats.segment_live_bytes},
      {"qaqkv_segment_writes_total", "counter",
       "Writes of page bytes to segment files; the pages of one block in one message share one.",
       stats.segment_writes},
      {"qaqkv_segment_syncs_total", "counter",
       "fdatasync calls of segment files (--sync; concurrent writers share them).",
       stats.segment_syncs},
      {"qaqkv_pages_promoted_total", "counter",
       "Pages read from disk and copied into the DRAM tier (on a second read in a while, "
       "or every read with --promote-on-first-read); against qaqkv_tier_hits_total{tier=\"disk\"}, "
       "the share of disk reads the read admission kept out of memory.",
       stats.pages_promoted},
      {"qaqkv_segments_collected_total", "counter",
       "Segments the collector rewrote and deleted.", stats.segments_collected},
      {"qaqkv_segment_collector_copied_bytes_total", "counter",
       "Live page bytes the collector copied out of sparse segments (its write amplification).",
       stats.segment_bytes_copied},
      {"qaqkv_data_dir_bytes", "gauge",
       "Bytes the data directory's files take on disk (WAL, SSTs, blob files, segments, "
       "garbage included): what the volume must hold.",
       stats.data_dir_bytes},
      {"qaqkv_wal_bytes", "gauge", "Bytes of RocksDB's write-ahead logs.", stats.wal_bytes},
      {"qaqkv_blob_garbage_bytes", "gauge",
       "Bytes of RocksDB blob files no page references (pages stored without "
       "--separate-pages), until blob garbage collection reclaims them.",
       stats.blob_garbage_bytes},
      {"qaqkv_filesystem_free_bytes", "gauge",
       "Free bytes on the data directory's filesystem (for unprivileged users).",
       stats.fs_free_bytes},
      {"qaqkv_filesystem_size_bytes", "gauge", "Size of the data directory's filesystem.",
       stats.fs_size_bytes},
      {"qaqkv_write_back_limit_bytes", "gauge",
       "Write-back: acknowledged page bytes allowed to wait unwritten (0: write-back off).",
       stats.write_back_limit_bytes},
      {"qaqkv_write_back_dirty_bytes", "gauge",
       "Write-back: acknowledged page bytes not yet written to disk (what a crash would lose).",
       stats.write_back_dirty_bytes},
      {"qaqkv_write_back_pages_written_total", "counter",
       "Write-back: queued pages the background writer stored.", stats.write_back_written_pages},
      {"qaqkv_write_back_stalls_total", "counter",
       "Write-back: puts that waited for room among the unwritten bytes.",
       stats.write_back_stalls},
  };
  for (const Plain& p : disk) {
    AppendFamily(out, p.name, p.type, p.help);
    AppendSample(out, p.name, "", static_cast<double>(p.value));
  }
  AppendFamily(out, "qaqkv_blocks", "gauge", "Blocks of all tenants, committed or not.");
  AppendSample(out, "qaqkv_blocks", "", static_cast<double>(stats.blocks));
  AppendFamily(out, "qaqkv_blocks_dropped_total", "counter",
               "Blocks dropped because a page was lost: evicted (memory-only) or damaged on disk.");
  AppendSample(out, "qaqkv_blocks_dropped_total", "", static_cast<double>(stats.blocks_dropped));
  // Each family's samples stay together, as the exposition format requires.
  AppendFamily(out, "qaqkv_tenant_bytes", "gauge", "Page bytes per tenant.");
  for (const auto& [tenant, usage] : tenants) {
    AppendSample(out, "qaqkv_tenant_bytes", absl::StrCat("tenant=\"", EscapeLabel(tenant), "\""),
                 static_cast<double>(usage.bytes));
  }
  AppendFamily(out, "qaqkv_tenant_quota_bytes", "gauge",
               "Page bytes each tenant may keep (--tenant-quota-bytes; 0: no quota).");
  AppendSample(out, "qaqkv_tenant_quota_bytes", "", static_cast<double>(stats.tenant_quota_bytes));
  AppendFamily(out, "qaqkv_tenant_blocks", "gauge", "Blocks per tenant.");
  for (const auto& [tenant, usage] : tenants) {
    AppendSample(out, "qaqkv_tenant_blocks", absl::StrCat("tenant=\"", EscapeLabel(tenant), "\""),
                 static_cast<double>(usage.blocks));
  }
}

void RenderReadiness(bool ready, std::string& out) {
  AppendFamily(out, "qaqkv_ready", "gauge",
               "1 while the server serves and its disk takes writes (readiness), else 0.");
  AppendSample(out, "qaqkv_ready", "", ready ? 1.0 : 0.0);
}

}  // namespace qaqkv::service
