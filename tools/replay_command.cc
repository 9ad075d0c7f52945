// `qaqkv replay`: drives a deployment with a real request trace (the
// Mooncake FAST'25 synthetic trace in data/): for each request, Lookup the
// block chain, GetPages for the cached prefix, PutPages for the rest. The
// same requests then run against Redis 7 with the same bytes (EXISTS for
// the lookup, pipelined GET/SET), and both are printed side by side.
//
// The trace gives per request a timestamp (ms), the input length and the
// hash ids of its 512-token prefix blocks; a hash id is one block, and equal
// ids are equal prefixes. Every block becomes `layers` pages of the chosen
// (scaled-down) geometry, encoded once per layer from seeded KV: a replay
// stores and moves real page bytes without spending its time encoding.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <mutex>
#include <random>
#include <span>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "kernels/codec.h"
#include "nlohmann/json.hpp"
#include "qaqkv/client.h"
#include "tools/commands.h"
#include "tools/internal/flag_check.h"
#include "tools/internal/kv_prep.h"
#include "tools/internal/connect.h"
#include "tools/internal/redis.h"
#include "tools/internal/report.h"

namespace qaqkv::tools {
namespace {

namespace qc = qaqkv::client;
using Clock = std::chrono::steady_clock;

struct Request {
  int64_t timestamp_ms = 0;
  std::vector<uint64_t> hash_ids;
};

int Fail(const std::string& msg, int code = 1) {
  std::fprintf(stderr, "qaqkv replay: %s\n", msg.c_str());
  return code;
}

absl::StatusOr<std::vector<Request>> LoadTrace(const std::string& path, int limit) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--trace: cannot read ", path));
  std::vector<Request> out;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line) && (limit == 0 || static_cast<int>(out.size()) < limit)) {
    ++line_no;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("hash_ids") ||
        !j["hash_ids"].is_array() || !j.contains("timestamp") || !j["timestamp"].is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--trace: ", path, ":", line_no, ": not a trace record"));
    }
    Request r;
    r.timestamp_ms = j["timestamp"].get<int64_t>();
    for (const auto& h : j["hash_ids"]) {
      if (!h.is_number_unsigned()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--trace: ", path, ":", line_no, ": hash_ids holds a non-integer"));
      }
      r.hash_ids.push_back(h.get<uint64_t>());
    }
    out.push_back(std::move(r));
  }
  return out;
}

// The prefix hit ratio of an infinite cache that starts empty: a request's
// hits are the leading blocks every one of which an earlier request stored.
double IdealHitRatio(const std::vector<Request>& trace) {
  absl::flat_hash_set<uint64_t> seen;
  uint64_t hits = 0, blocks = 0;
  for (const Request& r : trace) {
    size_t n = 0;
    while (n < r.hash_ids.size() && seen.contains(r.hash_ids[n])) ++n;
    hits += n;
    blocks += r.hash_ids.size();
    seen.insert(r.hash_ids.begin(), r.hash_ids.end());
  }
  return blocks ? double(hits) / blocks : 0;
}

qc::BlockKey KeyOf(uint64_t hash_id, uint64_t salt) {
  qc::BlockKey k{};
  std::memcpy(k.data(), &hash_id, 8);
  std::memcpy(k.data() + 8, &salt, 8);
  return k;
}

// What one replay measured.
struct Tally {
  std::mutex mu;
  std::vector<double> lookup_ms, get_ms, put_ms;  // guarded by mu
  std::atomic<uint64_t> hit_blocks{0}, blocks{0}, bytes_put{0}, bytes_got{0}, errors{0};
  std::string first_error;  // guarded by mu
  double seconds = 0;

  void Error(const std::string& e) {
    ++errors;
    std::lock_guard<std::mutex> lock(mu);
    if (first_error.empty()) first_error = e;
  }
  void Add(std::vector<double>& v, Clock::time_point start) {
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    std::lock_guard<std::mutex> lock(mu);
    v.push_back(ms);
  }
};

// Runs `one(request index, worker)` for every request on `workers` threads,
// in trace order, each no earlier than its timestamp / time_scale (when
// time_scale > 0).
template <typename Fn>
double Drive(const std::vector<Request>& trace, int workers, double time_scale, Progress& progress,
             Fn one) {
  std::atomic<size_t> next{0}, done{0};
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int w = 0; w < workers; ++w) {
    pool.emplace_back([&, w] {
      for (size_t i = next++; i < trace.size(); i = next++) {
        if (time_scale > 0) {
          std::this_thread::sleep_until(
              start + std::chrono::duration<double, std::milli>(trace[i].timestamp_ms / time_scale));
        }
        one(i, w);
        ++done;
      }
    });
  }
  while (done < trace.size()) {
    progress.Update(static_cast<int64_t>(done), static_cast<int64_t>(trace.size()));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto& t : pool) t.join();
  progress.Update(static_cast<int64_t>(trace.size()), static_cast<int64_t>(trace.size()));
  return std::chrono::duration<double>(Clock::now() - start).count();
}


// The flags, each checked on its own: the first bad one as "--flag: ...",
// or OK.
absl::Status CheckArgs(const ReplayArgs& a, Format* format, CodecConfig* codec) {
  if (!ParseFormat(a.format, format)) {
    return absl::InvalidArgumentError("--format: table, csv or json");
  }
  // One flag per message: naming every rule at once leaves the user to find
  // which value broke which.
  QAQKV_RETURN_IF_ERROR(FirstError({CheckRange("--requests", a.requests, 0, 1 << 30),
                                    CheckRange("--layers", a.layers, 1, 256),
                                    CheckRange("--kv-heads", a.kv_heads, 1, 1024),
                                    CheckRange("--head-dim", a.head_dim, 1, 1024),
                                    CheckRange("--block-tokens", a.block_tokens, 1, 1 << 20),
                                    CheckRange("--concurrency", a.concurrency, 1, 256),
                                    CheckAtLeast("--time-scale", a.time_scale, 0)}));
  absl::StatusOr<CodecConfig> parsed = ParseCodecConfig(a.codec);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--codec: ", parsed.status().message()));
  }
  *codec = *std::move(parsed);
  return absl::OkStatus();
}

// What a replay stores for every trace block: `layers` pages of the flags'
// geometry, the same encoded bytes for every block, under a key made of the
// block's hash id and this run's salt.
struct BlockData {
  qc::Geometry geometry;
  std::vector<std::string> pages;  // one per layer
  uint64_t bytes = 0;              // of one block: all its pages
  uint64_t salt = 0;

  qc::BlockKey Key(uint64_t hash_id) const { return KeyOf(hash_id, salt); }
};

absl::StatusOr<BlockData> MakeBlockData(const ReplayArgs& a, const CodecConfig& codec) {
  BlockData d;
  d.geometry.num_layers = a.layers;
  d.geometry.num_kv_heads = a.kv_heads;
  d.geometry.num_q_heads = a.kv_heads * 4;
  d.geometry.head_dim = a.head_dim;
  d.geometry.block_tokens = a.block_tokens;
  QAQKV_ASSIGN_OR_RETURN(
      d.pages, RandomPages(codec, {a.block_tokens, a.kv_heads, a.head_dim}, a.layers, /*seed=*/11));
  for (const std::string& p : d.pages) d.bytes += p.size();
  // A fresh salt per run: every replay starts from a cold cache, as the
  // ideal ratio assumes.
  d.salt = a.salt != 0 ? a.salt : static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  return d;
}

// One client per replay worker, so that workers do not share a channel.
absl::StatusOr<std::vector<std::unique_ptr<qc::Client>>> ConnectClients(const ConnectArgs& conn,
                                                                        int count) {
  std::vector<std::unique_ptr<qc::Client>> clients;
  for (int w = 0; w < count; ++w) {
    QAQKV_ASSIGN_OR_RETURN(std::unique_ptr<qc::Client> c, Connect(conn));
    clients.push_back(std::move(c));
  }
  return clients;
}

// One request against qaqkv: Lookup the chain, GetPages for the cached
// prefix, PutPages for the rest.
void ReplayOnQaqkv(qc::Client& c, const Request& request, const BlockData& blocks,
                   const std::string& codec, Tally& t) {
  std::vector<qc::BlockKey> chain;
  for (uint64_t h : request.hash_ids) chain.push_back(blocks.Key(h));
  t.blocks += chain.size();
  auto t0 = Clock::now();
  auto n = c.Lookup(chain, &blocks.geometry, codec);
  t.Add(t.lookup_ms, t0);
  if (!n.ok()) return t.Error(n.status().ToString());
  t.hit_blocks += *n;
  if (*n > 0) {
    t0 = Clock::now();
    uint64_t got = 0;
    absl::Status s = c.GetPagesInPlace(
        std::span<const qc::BlockKey>(chain).first(*n), 0, 0,
        [&](const qc::BlockKey&, int layer, const qc::PageBytes& data) {
          if (data.size() != blocks.pages[layer].size()) {
            return absl::DataLossError("page of the wrong size");
          }
          got += data.size();
          return absl::OkStatus();
        });
    t.Add(t.get_ms, t0);
    if (!s.ok()) return t.Error(s.ToString());
    t.bytes_got += got;
  }
  if (*n < chain.size()) {
    std::vector<qc::EncodedPage> put;
    for (size_t b = *n; b < chain.size(); ++b) {
      for (int l = 0; l < blocks.geometry.num_layers; ++l) {
        put.push_back({chain[b], l, blocks.pages[l]});
      }
    }
    t0 = Clock::now();
    auto r = c.PutPages(blocks.geometry, codec, put);
    t.Add(t.put_ms, t0);
    if (!r.ok()) return t.Error(r.status().ToString());
    t.bytes_put += r->bytes;
  }
}

// The same request against Redis: EXISTS for the lookup, then pipelined GET
// of the cached prefix and SET of the rest, one key per page.
void ReplayOnRedis(redisContext* c, const Request& request, const BlockData& blocks,
                   std::span<const std::string_view> page_views, Tally& t) {
  const std::vector<uint64_t>& ids = request.hash_ids;
  const int layers = blocks.geometry.num_layers;
  t.blocks += ids.size();
  // The lookup asks for each block's last layer: like a committed block,
  // it exists only once the whole block was written.
  std::vector<std::string> last;
  for (uint64_t h : ids) last.push_back(RedisPageKey(blocks.Key(h), layers - 1));
  auto t0 = Clock::now();
  auto n = RedisExistingPrefix(c, last);
  t.Add(t.lookup_ms, t0);
  if (!n.ok()) return t.Error(n.status().ToString());
  t.hit_blocks += *n;
  if (*n > 0) {
    std::vector<std::string> keys;
    for (int l = 0; l < layers; ++l)  // layer-major, as GetPages sends
      for (size_t b = 0; b < *n; ++b) keys.push_back(RedisPageKey(blocks.Key(ids[b]), l));
    uint64_t got = 0;
    t0 = Clock::now();
    absl::Status s = RedisGet(c, keys, 0, &got);
    t.Add(t.get_ms, t0);
    if (!s.ok()) return t.Error(s.ToString());
    t.bytes_got += got;
  }
  if (*n < ids.size()) {
    std::vector<std::string> keys;
    std::vector<std::string_view> values;
    for (size_t b = *n; b < ids.size(); ++b) {
      for (int l = 0; l < layers; ++l) {
        keys.push_back(RedisPageKey(blocks.Key(ids[b]), l));
        values.push_back(page_views[l]);
      }
    }
    t0 = Clock::now();
    absl::Status s = RedisSet(c, keys, values);
    t.Add(t.put_ms, t0);
    if (!s.ok()) return t.Error(s.ToString());
    t.bytes_put += blocks.bytes * (ids.size() - *n);
  }
}

// The whole trace against a Redis server started for it, its log in `dir`;
// the server is stopped on return.
absl::Status ReplayRedis(const ReplayArgs& a, const std::vector<Request>& trace,
                         const BlockData& blocks, const std::string& dir, Tally& t) {
  QAQKV_ASSIGN_OR_RETURN(RedisServer redis, StartRedis(a.redis_binary, dir + "/redis.log"));
  std::vector<RedisConn> conns;
  for (int w = 0; w < a.concurrency; ++w) {
    QAQKV_ASSIGN_OR_RETURN(RedisConn c, RedisConnect(redis.port));
    conns.push_back(std::move(c));
  }
  const std::vector<std::string_view> page_views(blocks.pages.begin(), blocks.pages.end());
  Progress progress("replay redis");
  t.seconds = Drive(trace, a.concurrency, a.time_scale, progress, [&](size_t i, int w) {
    ReplayOnRedis(conns[w].get(), trace[i], blocks, page_views, t);
  });
  return absl::OkStatus();
}

// One row per system that ran; for a table, the geometry and the deployment
// under it too.
void PrintReport(const ReplayArgs& a, Format format, const CodecConfig& codec,
                 const std::vector<Request>& trace, const BlockData& blocks,
                 const qc::Client& client, const Tally& ours, const Tally* redis) {
  const double ideal = IdealHitRatio(trace);
  Report report({"system", "requests", "blocks", "hit_ratio", "ideal", "GiB_put", "GiB_got",
                 "lookup_p50_ms", "lookup_p99_ms", "get_p50_ms", "get_p99_ms", "put_p50_ms",
                 "put_p99_ms", "seconds", "errors"});
  auto row = [&](const std::string& name, const Tally& t) {
    report.Add({{name}, {int64_t(trace.size())}, {int64_t(t.blocks.load())},
                {t.blocks ? double(t.hit_blocks) / t.blocks : 0.0, 4}, {ideal, 4},
                {t.bytes_put / double(1 << 30), 3}, {t.bytes_got / double(1 << 30), 3},
                {Percentile(t.lookup_ms, 0.5), 3}, {Percentile(t.lookup_ms, 0.99), 3},
                {Percentile(t.get_ms, 0.5), 3}, {Percentile(t.get_ms, 0.99), 3},
                {Percentile(t.put_ms, 0.5), 3}, {Percentile(t.put_ms, 0.99), 3},
                {t.seconds, 2}, {int64_t(t.errors.load())}});
  };
  row("qaqkv", ours);
  if (redis != nullptr) row("redis", *redis);
  report.Print(format);
  if (format == Format::kTable) {
    std::printf("geometry: %d layers x %d kv heads x %d dims, %d-token blocks, codec %s: "
                "%.1f KiB per block\n",
                a.layers, a.kv_heads, a.head_dim, a.block_tokens, codec.Name().c_str(),
                blocks.bytes / 1024.0);
    const auto servers = client.Servers();
    if (servers.size() > 1) {
      const int r = a.conn.replicas == 0 ? 2 : a.conn.replicas;
      std::printf("qaqkv: %zu servers, %d replicas per block (GiB put counts every copy)\n",
                  servers.size(), std::min<int>(r, static_cast<int>(servers.size())));
    }
  }
}

// 1 when any request failed, after naming each replay's first failure; 0
// otherwise.
int ReportErrors(std::initializer_list<const Tally*> tallies) {
  int rc = 0;
  for (const Tally* t : tallies) {
    if (t->errors > 0) {
      std::fprintf(stderr, "qaqkv replay: %llu errors, the first: %s\n",
                   static_cast<unsigned long long>(t->errors.load()), t->first_error.c_str());
      rc = 1;
    }
  }
  return rc;
}

}  // namespace

int RunReplay(const ReplayArgs& a) {
  Format format;
  CodecConfig codec;
  if (absl::Status st = CheckArgs(a, &format, &codec); !st.ok()) {
    return Fail(std::string(st.message()), 2);
  }
  absl::StatusOr<std::vector<Request>> trace = LoadTrace(a.trace, a.requests);
  if (!trace.ok()) return Fail(trace.status().ToString(), 2);
  if (trace->empty()) return Fail("--trace: no requests", 2);
  absl::StatusOr<BlockData> blocks = MakeBlockData(a, codec);
  if (!blocks.ok()) return Fail(blocks.status().ToString());

  absl::StatusOr<std::vector<std::unique_ptr<qc::Client>>> clients =
      ConnectClients(a.conn, a.concurrency);
  if (!clients.ok()) return Fail(clients.status().ToString(), 2);
  if (auto s = (*clients)[0]->GetStats(); !s.ok()) {
    return Fail(absl::StrCat("cannot reach qaqkv-server at ", DescribeServers(a.conn), ": ",
                             s.status().ToString()));
  }

  Tally ours;
  {
    Progress progress("replay qaqkv");
    ours.seconds = Drive(*trace, a.concurrency, a.time_scale, progress, [&](size_t i, int w) {
      ReplayOnQaqkv(*(*clients)[w], (*trace)[i], *blocks, a.codec, ours);
    });
  }

  Tally redis;
  if (a.redis) {
    absl::StatusOr<base::TempDir> dir = base::TempDir::Create("qaqkv-replay");
    if (!dir.ok()) return Fail(dir.status().ToString());
    if (absl::Status st = ReplayRedis(a, *trace, *blocks, dir->path(), redis); !st.ok()) {
      return Fail(st.ToString());
    }
  }

  PrintReport(a, format, codec, *trace, *blocks, *(*clients)[0], ours, a.redis ? &redis : nullptr);
  return ReportErrors({&ours, &redis});
}

}  // namespace qaqkv::tools
