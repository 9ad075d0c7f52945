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
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
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
namespace fs = std::filesystem;
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

}  // namespace

int RunReplay(const ReplayArgs& a) {
  Format format;
  if (!ParseFormat(a.format, &format)) return Fail("--format: table, csv or json", 2);
  // One flag per message: naming every rule at once leaves the user to find
  // which value broke which.
  if (absl::Status st = FirstError({CheckRange("--requests", a.requests, 0, 1 << 30),
                                    CheckRange("--layers", a.layers, 1, 256),
                                    CheckRange("--kv-heads", a.kv_heads, 1, 1024),
                                    CheckRange("--head-dim", a.head_dim, 1, 1024),
                                    CheckRange("--block-tokens", a.block_tokens, 1, 1 << 20),
                                    CheckRange("--concurrency", a.concurrency, 1, 256),
                                    CheckAtLeast("--time-scale", a.time_scale, 0)});
      !st.ok()) {
    return Fail(std::string(st.message()), 2);
  }
  auto cfg = ParseCodecConfig(a.codec);
  if (!cfg.ok()) return Fail(absl::StrCat("--codec: ", cfg.status().message()), 2);
  auto trace = LoadTrace(a.trace, a.requests);
  if (!trace.ok()) return Fail(trace.status().ToString(), 2);
  if (trace->empty()) return Fail("--trace: no requests", 2);

  // One encoded page per layer, reused for every block.
  qc::Geometry g;
  g.num_layers = a.layers;
  g.num_kv_heads = a.kv_heads;
  g.num_q_heads = a.kv_heads * 4;
  g.head_dim = a.head_dim;
  g.block_tokens = a.block_tokens;
  absl::StatusOr<std::vector<std::string>> made =
      RandomPages(*cfg, {a.block_tokens, a.kv_heads, a.head_dim}, a.layers, /*seed=*/11);
  if (!made.ok()) return Fail(made.status().ToString());
  const std::vector<std::string> pages = std::move(*made);
  std::vector<std::string_view> page_views(pages.begin(), pages.end());
  uint64_t block_bytes = 0;
  for (const std::string& p : pages) block_bytes += p.size();
  // A fresh salt per run: every replay starts from a cold cache, as the
  // ideal ratio assumes.
  const uint64_t salt = a.salt != 0 ? a.salt : static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  const double ideal = IdealHitRatio(*trace);

  std::vector<std::unique_ptr<qc::Client>> clients;
  for (int w = 0; w < a.concurrency; ++w) {
    auto c = Connect(a.conn);
    if (!c.ok()) return Fail(c.status().ToString(), 2);
    clients.push_back(std::move(*c));
  }
  if (auto s = clients[0]->GetStats(); !s.ok()) {
    return Fail(absl::StrCat("cannot reach qaqkv-server at ", DescribeServers(a.conn), ": ",
                             s.status().ToString()));
  }

  Tally ours;
  {
    Progress progress("replay qaqkv");
    ours.seconds = Drive(*trace, a.concurrency, a.time_scale, progress, [&](size_t i, int w) {
      qc::Client& c = *clients[w];
      std::vector<qc::BlockKey> chain;
      for (uint64_t h : (*trace)[i].hash_ids) chain.push_back(KeyOf(h, salt));
      ours.blocks += chain.size();
      auto t0 = Clock::now();
      auto n = c.Lookup(chain, &g, a.codec);
      ours.Add(ours.lookup_ms, t0);
      if (!n.ok()) return ours.Error(n.status().ToString());
      ours.hit_blocks += *n;
      if (*n > 0) {
        t0 = Clock::now();
        uint64_t got = 0;
        absl::Status s = c.GetPagesInPlace(
            std::span<const qc::BlockKey>(chain).first(*n), 0, 0,
            [&](const qc::BlockKey&, int layer, const qc::PageBytes& data) {
              if (data.size() != pages[layer].size()) {
                return absl::DataLossError("page of the wrong size");
              }
              got += data.size();
              return absl::OkStatus();
            });
        ours.Add(ours.get_ms, t0);
        if (!s.ok()) return ours.Error(s.ToString());
        ours.bytes_got += got;
      }
      if (*n < chain.size()) {
        std::vector<qc::EncodedPage> put;
        for (size_t b = *n; b < chain.size(); ++b) {
          for (int l = 0; l < a.layers; ++l) put.push_back({chain[b], l, pages[l]});
        }
        t0 = Clock::now();
        auto r = c.PutPages(g, a.codec, put);
        ours.Add(ours.put_ms, t0);
        if (!r.ok()) return ours.Error(r.status().ToString());
        ours.bytes_put += r->bytes;
      }
    });
  }

  Tally redis_tally;
  std::optional<RedisServer> redis;
  std::string dir;
  if (a.redis) {
    std::string tmpl = (fs::temp_directory_path() / "qaqkv-replay-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return Fail("cannot create a temporary directory");
    dir = tmpl;
    auto started = StartRedis(a.redis_binary, dir + "/redis.log");
    if (!started.ok()) return Fail(started.status().ToString());
    redis.emplace(std::move(*started));
    std::vector<RedisConn> conns;
    for (int w = 0; w < a.concurrency; ++w) {
      auto c = RedisConnect(redis->port);
      if (!c.ok()) return Fail(c.status().ToString());
      conns.push_back(std::move(*c));
    }
    Progress progress("replay redis");
    redis_tally.seconds = Drive(*trace, a.concurrency, a.time_scale, progress, [&](size_t i, int w) {
      redisContext* c = conns[w].get();
      const std::vector<uint64_t>& ids = (*trace)[i].hash_ids;
      redis_tally.blocks += ids.size();
      // The lookup asks for each block's last layer: like a committed block,
      // it exists only once the whole block was written.
      std::vector<std::string> last;
      for (uint64_t h : ids) last.push_back(RedisPageKey(KeyOf(h, salt), a.layers - 1));
      auto t0 = Clock::now();
      auto n = RedisExistingPrefix(c, last);
      redis_tally.Add(redis_tally.lookup_ms, t0);
      if (!n.ok()) return redis_tally.Error(n.status().ToString());
      redis_tally.hit_blocks += *n;
      if (*n > 0) {
        std::vector<std::string> keys;
        for (int l = 0; l < a.layers; ++l)  // layer-major, as GetPages sends
          for (size_t b = 0; b < *n; ++b) keys.push_back(RedisPageKey(KeyOf(ids[b], salt), l));
        uint64_t got = 0;
        t0 = Clock::now();
        absl::Status s = RedisGet(c, keys, 0, &got);
        redis_tally.Add(redis_tally.get_ms, t0);
        if (!s.ok()) return redis_tally.Error(s.ToString());
        redis_tally.bytes_got += got;
      }
      if (*n < ids.size()) {
        std::vector<std::string> keys;
        std::vector<std::string_view> values;
        for (size_t b = *n; b < ids.size(); ++b) {
          for (int l = 0; l < a.layers; ++l) {
            keys.push_back(RedisPageKey(KeyOf(ids[b], salt), l));
            values.push_back(page_views[l]);
          }
        }
        t0 = Clock::now();
        absl::Status s = RedisSet(c, keys, values);
        redis_tally.Add(redis_tally.put_ms, t0);
        if (!s.ok()) return redis_tally.Error(s.ToString());
        redis_tally.bytes_put += block_bytes * (ids.size() - *n);
      }
    });
  }

  Report report({"system", "requests", "blocks", "hit_ratio", "ideal", "GiB_put", "GiB_got",
                 "lookup_p50_ms", "lookup_p99_ms", "get_p50_ms", "get_p99_ms", "put_p50_ms",
                 "put_p99_ms", "seconds", "errors"});
  auto row = [&](const std::string& name, Tally& t) {
    report.Add({{name}, {int64_t(trace->size())}, {int64_t(t.blocks.load())},
                {t.blocks ? double(t.hit_blocks) / t.blocks : 0.0, 4}, {ideal, 4},
                {t.bytes_put / double(1 << 30), 3}, {t.bytes_got / double(1 << 30), 3},
                {Percentile(t.lookup_ms, 0.5), 3}, {Percentile(t.lookup_ms, 0.99), 3}, {Percentile(t.get_ms, 0.5), 3},
                {Percentile(t.get_ms, 0.99), 3}, {Percentile(t.put_ms, 0.5), 3}, {Percentile(t.put_ms, 0.99), 3},
                {t.seconds, 2}, {int64_t(t.errors.load())}});
  };
  row("qaqkv", ours);
  if (a.redis) row("redis", redis_tally);
  report.Print(format);
  if (format == Format::kTable) {
    std::printf("geometry: %d layers x %d kv heads x %d dims, %d-token blocks, codec %s: "
                "%.1f KiB per block\n",
                a.layers, a.kv_heads, a.head_dim, a.block_tokens, cfg->Name().c_str(),
                block_bytes / 1024.0);
    const auto servers = clients[0]->Servers();
    if (servers.size() > 1) {
      const int r = a.conn.replicas == 0 ? 2 : a.conn.replicas;
      std::printf("qaqkv: %zu servers, %d replicas per block (GiB put counts every copy)\n",
                  servers.size(), std::min<int>(r, static_cast<int>(servers.size())));
    }
  }
  int rc = 0;
  for (Tally* t : {&ours, &redis_tally}) {
    if (t->errors > 0) {
      std::fprintf(stderr, "qaqkv replay: %llu errors, the first: %s\n",
                   static_cast<unsigned long long>(t->errors.load()), t->first_error.c_str());
      rc = 1;
    }
  }
  if (!dir.empty()) {
    redis.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  return rc;
}

}  // namespace qaqkv::tools
