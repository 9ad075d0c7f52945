// `qaqkv bench storage`: the page store against the baselines its targets
// name, measured in the same run (docs/performance.md):
// - DRAM-hit reads of pages against memcpy of the same bytes;
// - disk-tier writes (PutPages of one block's layers, as the service stores
//   a message: page bytes to the segment log, locations and record to
//   RocksDB, optional fsync) against writing the same bytes to a plain file
//   with the same sync points (one flush a put), and the segment log alone;
// - peak RSS and the DRAM tier's charge against its budget under a
//   sustained write load;
// - reads of pages only the disk tier holds against pread of the same bytes
//   from a plain file, page cache warm and cold;
// - the disk tier with --segment-direct-io, writes and reads, against a
//   plain file written and read with O_DIRECT.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/aligned_buffer.h"
#include "base/file.h"
#include "storage/segment_log.h"
#include "storage/tiered_store.h"
#include "tools/commands.h"
#include "tools/internal/flag_check.h"
#include "tools/internal/report.h"
#include "xxhash.h"

namespace qaqkv::tools {
namespace {

using Clock = std::chrono::steady_clock;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "qaqkv bench storage: %s\n", msg.c_str());
  return 2;
}

double Seconds(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

std::string MakePage(size_t bytes, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string p(bytes, '\0');
  for (size_t i = 0; i + 8 <= bytes - 8; i += 8) {
    const uint64_t v = rng();
    std::memcpy(p.data() + i, &v, 8);
  }
  const uint64_t h = XXH3_64bits(p.data(), bytes - 8);
  std::memcpy(p.data() + bytes - 8, &h, 8);
  return p;
}

// The alignment the store's direct appends use, so both sides pad alike.
constexpr size_t kDirectAlign = storage::kSegmentDirectAlign;

storage::BlockKey KeyOf(uint32_t i) {
  storage::BlockKey k{};
  std::memcpy(k.data(), &i, 4);
  return k;
}

long PeakRssKiB() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

}  // namespace

int RunBenchStorage(const BenchStorageArgs& args) {
  Format format;
  if (!ParseFormat(args.format, &format)) return Fail("--format: expected table, csv or json");
  // Upper bounds keep a typo from filling the memory or the disk: phase 2
  // holds --pages pages in memory, phase 1 writes 4x --memory-mib to disk.
  if (absl::Status st = FirstError({CheckRange("--page-kib", args.page_kib, 1, 65536),
                                    CheckRange("--pages", args.pages, 8, 1 << 20),
                                    CheckRange("--pages-per-put", args.pages_per_put, 1, 64),
                                    CheckRange("--memory-mib", args.memory_mib, 1, 65536),
                                    CheckRange("--startup-blocks", args.startup_blocks, 0, 1 << 24)});
      !st.ok()) {
    return Fail(std::string(st.message()));
  }
  const size_t page_bytes = size_t(args.page_kib) * 1024;
  // A failed run writes up to 4x --memory-mib into the directory: a
  // temporary one goes on every return, not only after a successful report.
  // (Declared before the stores, so the stores close first.)
  std::optional<base::TempDir> own_dir;
  std::string dir = args.dir;
  if (dir.empty()) {
    absl::StatusOr<base::TempDir> made = base::TempDir::Create("qaqkv-bench");
    if (!made.ok()) return Fail(made.status().ToString());
    own_dir.emplace(std::move(*made));
    dir = own_dir->path();
  }
  auto fail = [&](absl::string_view phase, const std::string& what, const absl::Status& st) {
    return Fail(absl::StrCat(phase, ": ", what, ": ", st.ToString()));
  };
  std::vector<std::string> pages;
  for (int i = 0; i < 16; ++i) pages.push_back(MakePage(page_bytes, i));
  Report report({"measure", "mode", "ours_gbps", "baseline", "baseline_gbps", "ratio"});

  // 1. Sustained writes (first, so the peak RSS is this load's) through a small DRAM budget: peak RSS against it.
  {
    constexpr absl::string_view kPhase = "sustained writes";
    const size_t budget = size_t(args.memory_mib) << 20;
    storage::TieredStoreOptions o;
    o.data_dir = dir + "/db-rss";
    o.memory_bytes = budget;
    auto store = storage::TieredStore::Open(o);
    if (!store.ok()) return fail(kPhase, "open " + o.data_dir, store.status());
    const long rss_before = PeakRssKiB();
    const size_t total = budget * 4;
    size_t max_charge = 0;
    for (uint32_t i = 0; size_t(i) * page_bytes < total; ++i) {
      auto r = (*store)->PutPage({"bench", KeyOf(1u << 20 | i), 0, 1, "geo", pages[i % pages.size()]});
      if (!r.ok()) return fail(kPhase, absl::StrCat("put page ", i), r.status());
      max_charge = std::max<size_t>(max_charge, (*store)->Stats().tiers[0].bytes);
    }
    const long rss_after = PeakRssKiB();
    report.Add({{"dram_charge_peak_mib"}, {"-"}, {max_charge / 1048576.0, 1}, {"budget_mib"},
                {budget / 1048576.0, 1}, {double(max_charge) / budget, 3}});
    report.Add({{"process_peak_rss_mib"}, {"-"}, {rss_after / 1024.0, 1}, {"before_load_mib"},
                {rss_before / 1024.0, 1}, {double(rss_after) / (budget / 1024.0), 3}});
  }
  // 2. DRAM-hit reads against memcpy of the same bytes.
  {
    constexpr absl::string_view kPhase = "dram-hit reads";
    storage::TieredStoreOptions o;
    o.memory_only = true;
    // Every read must hit, and memory-only the DRAM tier holds the only
    // copy: a page it evicts drops its whole block, and the read then finds
    // no block. The tier splits its budget evenly over its shards and a
    // key's shard is a hash, so the pages need not spread evenly: give
    // every shard room for all of them. The budget is a cap, not an
    // allocation; memory use stays --pages pages.
    const size_t charge = page_bytes + 4096;  // page + key + per-entry overhead, rounded up
    o.memory_bytes = size_t(o.dram_shards) * size_t(args.pages) * charge;
    auto store = storage::TieredStore::Open(o);
    if (!store.ok()) return fail(kPhase, "open (memory only)", store.status());
    for (int i = 0; i < args.pages; ++i) {
      auto r = (*store)->PutPage({"bench", KeyOf(i), 0, 1, "geo", pages[i % pages.size()]});
      if (!r.ok()) return fail(kPhase, absl::StrCat("put page ", i), r.status());
    }
    // A dropped block would make the timed loop fail midway or, worse,
    // time misses: check before timing.
    if (const uint64_t dropped = (*store)->BlocksDropped(); dropped != 0) {
      return Fail(absl::StrCat(kPhase, ": the DRAM tier evicted ", dropped, " of ", args.pages,
                               " pages after they were stored (budget ", o.memory_bytes,
                               " bytes over ", o.dram_shards, " shards)"));
    }
    const int reads = args.pages * 8;
    uint64_t sink = 0;
    auto t0 = Clock::now();
    for (int i = 0; i < reads; ++i) {
      const int page = i % args.pages;
      auto p = (*store)->GetPage("bench", KeyOf(page), 0);
      if (!p.ok()) {
        return fail(kPhase, absl::StrCat("read ", i, " of ", reads, ", page ", page), p.status());
      }
      sink += static_cast<uint8_t>((**p)[i % page_bytes]);  // the bytes are there to use
    }
    const double t_get = Seconds(t0);
    std::vector<char> dst(page_bytes);
    t0 = Clock::now();
    for (int i = 0; i < reads; ++i) {
      const std::string& src = pages[i % pages.size()];
      std::memcpy(dst.data(), src.data(), page_bytes);
      asm volatile("" : : "r"(dst.data()) : "memory");
    }
    const double t_copy = Seconds(t0);
    const double ours = double(reads) * page_bytes / t_get / 1e9;
    const double base = double(reads) * page_bytes / t_copy / 1e9;
    report.Add({{"dram_hit_read"}, {"-"}, {ours, 2}, {"memcpy"}, {base, 2}, {ours / base, 2}});
    if (sink == 42) std::fprintf(stderr, " ");
  }

  // 3. Writes of the same pages, with and without fsync: the disk tier
  // (PutPages as the service issues it: the service verified the page's
  // checksum on receipt, whatever the tier, so the store does not hash it
  // again), the disk tier hashing the page itself, the segment log alone,
  // and a plain file written with write(2) (and fdatasync). Three rounds, in
  // an order that rotates each round, and the median of each: in one fixed
  // order whichever ran first would get the page cache's room for dirty
  // pages and the others its writeback.
  std::vector<base::AlignedBuffer> aligned;
  for (const std::string& p : pages) {
    base::AlignedBuffer a = base::AlignedBuffer::Allocate(p.size(), kDirectAlign);
    if (a.empty()) return Fail("no memory for the aligned pages");
    std::memset(a.data(), 0, a.size());
    std::memcpy(a.data(), p.data(), p.size());
    aligned.push_back(std::move(a));
  }
  for (bool sync : {false, true}) {
    const absl::string_view phase = sync ? "disk writes (fsync)" : "disk writes";
    const int n = sync ? std::max(8, args.pages / 8) : args.pages;
    constexpr int kRounds = 3;
    const std::string db_dir = dir + (sync ? "/db-sync" : "/db");
    storage::TieredStoreOptions o;
    o.data_dir = db_dir;
    o.sync = sync;
    o.memory_bytes = 64 << 20;
    auto store = storage::TieredStore::Open(o);
    if (!store.ok()) return fail(phase, "open " + db_dir, store.status());
    o.data_dir = db_dir + "-direct";
    o.segment_direct_io = true;
    auto direct_store = storage::TieredStore::Open(o);
    if (!direct_store.ok()) return fail(phase, "open " + o.data_dir, direct_store.status());
    const std::string seg_dir = dir + (sync ? "/segments-sync" : "/segments");
    auto log = storage::SegmentLog::Open({seg_dir, 256ull << 20, sync});
    if (!log.ok()) return fail(phase, "open " + seg_dir, log.status());
    // Pages handed over in buffers the store may keep, as the service hands
    // over the pages it received (the DRAM tier then keeps them uncopied).
    std::vector<storage::PageBuffer> owned;
    for (const std::string& p : pages) owned.push_back(std::make_shared<const std::string>(p));
    // Round 0 writes keys 0..n-1 and the file "plain": the read phase reads
    // them back.
    // Page i is layer i % k of block i / k: each put is one block's k
    // layers, as the service stores a PutPages message's pages of a block.
    const int k = args.pages_per_put;
    auto store_round = [&](storage::TieredStore& st, int round,
                           bool verified) -> absl::StatusOr<double> {
      const uint32_t base = uint32_t(round) * uint32_t(n) + (verified ? 0u : 1u << 24);
      std::vector<storage::PutPageRequest> reqs;
      std::vector<storage::PutPageResult> results;
      const auto t0 = Clock::now();
      for (int i = 0; i < n; i += k) {
        reqs.clear();
        results.clear();
        for (int j = i; j < std::min(n, i + k); ++j) {
          const storage::PageBuffer& page = owned[j % owned.size()];
          reqs.push_back({"bench", KeyOf(base + uint32_t(j / k)), uint32_t(j % k), uint32_t(k),
                          "geo", *page, page});
          reqs.back().checksum_verified = verified;
        }
        if (absl::Status r = st.PutPages(reqs, &results); !r.ok()) return r;
      }
      return Seconds(t0);
    };
    auto log_round = [&](int round) -> absl::StatusOr<double> {
      std::vector<storage::BlockKey> keys(k);
      std::vector<storage::SegmentRecord> records;
      const auto t0 = Clock::now();
      for (int i = 0; i < n; i += k) {
        records.clear();
        for (int j = i; j < std::min(n, i + k); ++j) {
          keys[j - i] = KeyOf(uint32_t(round) * uint32_t(n) + uint32_t(j));
          records.push_back(
              {std::string_view(reinterpret_cast<const char*>(keys[j - i].data()), 16),
               pages[j % pages.size()]});
        }
        auto r = (*log)->AppendUnsettled(records);
        if (!r.ok()) return r.status();
        for (const storage::SegmentLocation& loc : *r) (*log)->Settle(loc);
      }
      return Seconds(t0);
    };
    // The plain file written the plain way, and with O_DIRECT: each page
    // from an aligned copy padded to 4 KiB, prepared before the clock runs.
    auto file_round = [&](int round, bool direct) -> absl::StatusOr<double> {
      const std::string file = dir + (sync ? "/plain-sync" : "/plain") +
                               (direct ? "-direct" : "") +
                               (round > 0 ? absl::StrCat("-", round) : "");
      const int fd =
          open(file.c_str(), O_CREAT | O_WRONLY | O_TRUNC | (direct ? O_DIRECT : 0), 0644);
      if (fd < 0) {
        return absl::UnavailableError(absl::StrCat("cannot create ", file, ": ", std::strerror(errno)));
      }
      const auto t0 = Clock::now();
      for (int i = 0; i < n; ++i) {
        const base::AlignedBuffer& a = aligned[i % aligned.size()];
        const std::string_view p =
            direct ? std::string_view(a.data(), a.size()) : std::string_view(pages[i % pages.size()]);
        // One flush per put, after its last page.
        const bool flush = sync && (i % k == k - 1 || i == n - 1);
        if (write(fd, p.data(), p.size()) != static_cast<ssize_t>(p.size()) ||
            (flush && fdatasync(fd) != 0)) {
          const int err = errno;
          close(fd);
          return absl::UnavailableError(absl::StrCat("plain file ", file, ": write of page ", i,
                                                     " failed: ", std::strerror(err)));
        }
      }
      const double t = Seconds(t0);
      close(fd);
      if (round > 0) unlink(file.c_str());
      return t;
    };
    // store, store hashing, segment log, plain file, direct store, plain
    // file with O_DIRECT
    constexpr int kWriters = 6;
    std::vector<double> times[kWriters];
    for (int round = 0; round < kRounds; ++round) {
      for (int k = 0; k < kWriters; ++k) {
        const int which = (k + round) % kWriters;
        absl::StatusOr<double> t = which == 0   ? store_round(**store, round, true)
                                   : which == 1 ? store_round(**store, round, false)
                                   : which == 2 ? log_round(round)
                                   : which == 3 ? file_round(round, false)
                                   : which == 4 ? store_round(**direct_store, round, true)
                                                : file_round(round, true);
        if (!t.ok()) return fail(phase, absl::StrCat("round ", round), t.status());
        times[which].push_back(*t);
      }
    }
    auto gbps = [&](std::vector<double>& t) {
      std::sort(t.begin(), t.end());
      return double(n) * page_bytes / t[t.size() / 2] / 1e9;
    };
    const double ours = gbps(times[0]), hashing = gbps(times[1]), seg = gbps(times[2]),
                 base = gbps(times[3]), direct = gbps(times[4]), base_direct = gbps(times[5]);
    const char* mode = sync ? "fsync" : "none";
    report.Add({{"disk_tier_write"}, {mode}, {ours, 3}, {"plain file write"}, {base, 3},
                {ours / base, 2}});
    report.Add({{"disk_tier_write_hashing"}, {mode}, {hashing, 3}, {"plain file write"},
                {base, 3}, {hashing / base, 2}});
    report.Add({{"segment_log_write"}, {mode}, {seg, 3}, {"plain file write"}, {base, 3},
                {seg / base, 2}});
    report.Add({{"disk_tier_write_direct"}, {mode}, {direct, 3}, {"plain file write"}, {base, 3},
                {direct / base, 2}});
    report.Add({{"disk_tier_write_direct"}, {mode}, {direct, 3}, {"plain file O_DIRECT write"},
                {base_direct, 3}, {direct / base_direct, 2}});
  }

  // 4. Reads of pages only the disk tier holds (a fresh store: the DRAM
  // tier is empty) against pread of the same bytes from the plain file of
  // phase 3, with the page cache as the writes left it (warm), then with
  // every file of both dropped from it (cold: written back, then
  // POSIX_FADV_DONTNEED). Each page is read once, as a resume reads a
  // session: by default the store does not copy such a page into its DRAM
  // tier (storage/internal/read_admission.h); the `promoting` row is the
  // store copying every page read into it, a fresh buffer per page that the
  // DRAM tier keeps. An untimed promoting pass first: a fresh process would
  // otherwise time the page faults of growing its heap, which a server that
  // has run for a while does not pay.
  // The `direct` pass reads the store that wrote with O_DIRECT (which reads
  // its segments with O_DIRECT too) against pread with O_DIRECT of the
  // plain file written that way: neither has a page cache to be warm in.
  struct ReadPass {
    bool timed, cold, promote, direct = false;
  };
  for (const ReadPass pass :
       {ReadPass{false, false, true}, ReadPass{true, false, false}, ReadPass{true, false, true},
        ReadPass{true, true, false}, ReadPass{true, false, false, true}}) {
    const bool cold = pass.cold;
    const absl::string_view phase = pass.direct ? "disk reads (direct)"
                                    : cold      ? "disk reads (cold)"
                                                : "disk reads (warm)";
    const int n = args.pages;
    if (cold) {
      std::error_code ec;
      std::vector<std::string> files = {dir + "/plain"};
      for (const auto& e : std::filesystem::recursive_directory_iterator(dir + "/db", ec)) {
        if (e.is_regular_file(ec)) files.push_back(e.path().string());
      }
      for (const std::string& f : files) {
        const int fd = open(f.c_str(), O_RDONLY);
        if (fd < 0) continue;
        (void)fdatasync(fd);
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
      }
    }
    storage::TieredStoreOptions o;
    o.data_dir = dir + (pass.direct ? "/db-direct" : "/db");
    o.memory_bytes = 64 << 20;
    o.promote_on_first_read = pass.promote;
    o.segment_direct_io = pass.direct;
    auto store = storage::TieredStore::Open(o);
    if (!store.ok()) return fail(phase, "open " + o.data_dir, store.status());
    uint64_t sink = 0;
    auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      auto p = (*store)->GetPage("bench", KeyOf(uint32_t(i / args.pages_per_put)),
                                 uint32_t(i % args.pages_per_put));
      if (!p.ok()) return fail(phase, absl::StrCat("read page ", i), p.status());
      sink += static_cast<uint8_t>((**p)[i % page_bytes]);
    }
    const double t_store = Seconds(t0);
    if (!pass.timed) continue;
    const std::string file = dir + (pass.direct ? "/plain-direct" : "/plain");
    const int fd = open(file.c_str(), O_RDONLY | (pass.direct ? O_DIRECT : 0));
    if (fd < 0) return Fail(absl::StrCat(phase, ": cannot open ", file, ": ", std::strerror(errno)));
    // Into one reused buffer (aligned, whole blocks, for O_DIRECT).
    const size_t stride = pass.direct ? aligned[0].size() : page_bytes;
    char* const buf = aligned[0].data();
    t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      if (pread(fd, buf, stride, off_t(i) * stride) != static_cast<ssize_t>(stride)) {
        const int err = errno;
        close(fd);
        return Fail(absl::StrCat(phase, ": plain file ", file, ": read of page ", i, " failed: ",
                                 std::strerror(err)));
      }
      sink += static_cast<uint8_t>(buf[i % page_bytes]);
    }
    const double t_file = Seconds(t0);
    close(fd);
    const double ours = double(n) * page_bytes / t_store / 1e9;
    const double base = double(n) * page_bytes / t_file / 1e9;
    report.Add({{pass.direct    ? "disk_tier_read_direct"
                 : pass.promote ? "disk_tier_read_promoting"
                                : "disk_tier_read"},
                {pass.direct ? "direct" : cold ? "cold" : "warm"}, {ours, 3},
                {pass.direct ? "plain file O_DIRECT pread" : "plain file pread"}, {base, 3},
                {ours / base, 2}});
    if (sink == 42) std::fprintf(stderr, " ");
  }

  // 5. Start-up: a store holding --startup-blocks blocks of one small page
  // each, closed and opened again; the open rebuilds the block index and
  // the segment log's live bytes from RocksDB.
  if (args.startup_blocks > 0) {
    constexpr absl::string_view kPhase = "start-up";
    storage::TieredStoreOptions o;
    o.data_dir = dir + "/db-startup";
    o.memory_bytes = 64 << 20;
    o.maintenance_interval_ms = 0;
    const std::string small = MakePage(256, 7);
    {
      auto store = storage::TieredStore::Open(o);
      if (!store.ok()) return fail(kPhase, "open " + o.data_dir, store.status());
      for (int i = 0; i < args.startup_blocks; ++i) {
        auto r = (*store)->PutPage({"bench", KeyOf(2u << 24 | uint32_t(i)), 0, 1, "geo", small});
        if (!r.ok()) return fail(kPhase, absl::StrCat("put block ", i), r.status());
      }
    }
    const auto t0 = Clock::now();
    auto store = storage::TieredStore::Open(o);
    if (!store.ok()) return fail(kPhase, "reopen " + o.data_dir, store.status());
    const double t_open = Seconds(t0);
    const uint64_t blocks = (*store)->Stats().blocks;
    if (blocks != uint64_t(args.startup_blocks)) {
      return Fail(absl::StrCat(kPhase, ": reopened with ", blocks, " blocks, wrote ",
                               args.startup_blocks));
    }
    report.Add({{"open_seconds"}, {"-"}, {t_open, 3}, {"blocks"}, {double(blocks), 0},
                {t_open / (double(blocks) / 1e6), 3}});
  }

  if (format == Format::kTable) {
    std::printf("# %d pages of %d KiB, %d per put (one block's layers; with fsync one flush per put), "
                "one thread; RocksDB in %s\n",
                args.pages, args.page_kib, args.pages_per_put, dir.c_str());
  }
  report.Print(format);
  return 0;
}

}  // namespace qaqkv::tools
