// `qaqkv bench service`: put and get throughput and latency of the real
// qaqkv-server against Redis 7 on the same machine, in the same run, with
// the same bytes (docs/performance.md).
//
// Three servers are started here on loopback: qaqkv-server memory-only (a
// pure cache, as durable as the Redis it is compared with), qaqkv-server on
// RocksDB in a temporary directory (WAL on, no fsync: its default), and
// redis-server with `--save '' --appendonly no`. One operation moves one block: `pages_per_op`
// pages of `page_kib` each, as one PutPages/GetPages stream, or as that many
// pipelined SET/GET commands on one hiredis connection. Each of the
// `concurrency` threads has its own connection (its own Client).
//
// The disk's own pace for the same bytes runs beside them (`plain-file`):
// each thread appends an operation's pages to its own file with write(2)
// (puts; the files grow through the whole bench, as the segments do), or
// preads an operation's worth of the working set from one file
// into a buffer it reuses (gets), the page cache as the runs left it. Each
// run of each system starts after sync(2), so none waits on another's
// writeback; a run of a few seconds then measures writes the page cache
// absorbs (bursts), not the disk's sustained pace.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/child_process.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "kernels/codec.h"
#include "qaqkv/client.h"
#include "tools/commands.h"
#include "tools/internal/flag_check.h"
#include "tools/internal/kv_prep.h"
#include "tools/internal/redis.h"
#include "tools/internal/report.h"

namespace qaqkv::tools {

using base::ChildProcess;
using base::ExecutableDir;
using base::FreeLoopbackPort;
using base::ParseCpuList;
using base::WaitForPortFile;
using base::WaitForTcp;
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
namespace qc = qaqkv::client;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "qaqkv bench service: %s\n", msg.c_str());
  return 1;
}

// What one thread measured in one run.
struct ThreadResult {
  std::vector<double> latencies;  // seconds per operation
  uint64_t bytes = 0;
  std::string error;
};

struct RunResult {
  double mbps = 0;
  double p50_ms = 0, p99_ms = 0;
  std::string error;
};

// Runs `op(thread, i)` on `threads` threads for `seconds`, after a short
// warm-up that is not counted.
template <typename Op>
RunResult TimedRun(int threads, double seconds, uint64_t op_bytes, Op op) {
  std::vector<ThreadResult> results(threads);
  std::atomic<bool> measuring{false}, stop{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ThreadResult& r = results[t];
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const bool counted = measuring.load(std::memory_order_relaxed);
        const auto start = Clock::now();
        if (std::string e = op(t, i); !e.empty()) {
          r.error = e;
          return;
        }
        if (counted && !stop.load(std::memory_order_relaxed)) {
          r.latencies.push_back(std::chrono::duration<double>(Clock::now() - start).count());
          r.bytes += op_bytes;
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = Clock::now();
  measuring = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  for (auto& th : pool) th.join();
  RunResult out;
  std::vector<double> all;
  uint64_t bytes = 0;
  for (ThreadResult& r : results) {
    if (!r.error.empty()) out.error = r.error;
    all.insert(all.end(), r.latencies.begin(), r.latencies.end());
    bytes += r.bytes;
  }
  out.mbps = bytes / elapsed / 1e6;
  out.p50_ms = Percentile(all, 0.5) * 1e3;
  out.p99_ms = Percentile(all, 0.99) * 1e3;
  return out;
}

RunResult Median(std::vector<RunResult> runs) {
  std::sort(runs.begin(), runs.end(),
            [](const RunResult& a, const RunResult& b) { return a.mbps < b.mbps; });
  for (const RunResult& r : runs) {
    if (!r.error.empty()) return r;
  }
  return runs[runs.size() / 2];
}

qc::BlockKey Key(uint64_t space, uint64_t thread, uint64_t i) {
  qc::BlockKey k{};
  std::memcpy(k.data(), &space, 4);
  std::memcpy(k.data() + 4, &thread, 4);
  std::memcpy(k.data() + 8, &i, 8);
  return k;
}

std::string Text(const absl::Status& s) { return s.ok() ? std::string() : s.ToString(); }

// The flags, each checked on its own: the first bad one as
// "--flag: must be ...", or OK.
absl::Status CheckArgs(const BenchServiceArgs& args, Format* format) {
  if (!ParseFormat(args.format, format)) {
    return absl::InvalidArgumentError("--format: expected table, csv or json");
  }
  if (args.page_kib < 8 || args.page_kib % 8 != 0 || args.page_kib > 8192) {
    return absl::InvalidArgumentError(
        absl::StrCat("--page-kib: a multiple of 8 in 8..8192, got ", args.page_kib));
  }
  if (args.concurrency.empty()) {
    return absl::InvalidArgumentError("--concurrency: give at least one value");
  }
  // One flag per message: a list of every rule leaves the user to guess
  // which value broke which. Upper bounds keep a typo from running for
  // hours or filling the disk.
  std::vector<absl::Status> checks = {
      CheckRange("--pages-per-op", args.pages_per_op, 1, 64),
      CheckRange("--seconds", args.seconds, 0.001, 3600),
      CheckRange("--runs", args.runs, 1, 1000),
      CheckRange("--working-blocks", args.working_blocks, 1, 1 << 20),
      CheckRange("--memory-mib", args.memory_mib, 1, 1 << 20),
      CheckRange("--disk-mib", args.disk_mib, 1, 1 << 24),
  };
  for (int c : args.concurrency) checks.push_back(CheckRange("--concurrency", c, 1, 256));
  for (const absl::Status& st : checks) QAQKV_RETURN_IF_ERROR(st);
  return absl::OkStatus();
}

// The geometry whose every page is page_kib: 256 tokens x 8 KV heads x
// head_dim, K and V at 2 bytes (fp16 pages have exactly that size).
qc::Geometry BenchGeometry(const BenchServiceArgs& args) {
  qc::Geometry geometry;
  geometry.num_layers = args.pages_per_op;
  geometry.num_kv_heads = 8;
  geometry.num_q_heads = 32;
  geometry.head_dim = args.page_kib / 8;
  geometry.block_tokens = 256;
  return geometry;
}

// One qaqkv-server the bench started, and a client per measuring thread.
struct Server {
  std::string name;
  std::optional<ChildProcess> process;
  int port = 0;
  std::vector<std::unique_ptr<qc::Client>> clients;
};

// Two servers: memory-only (a pure cache, durable like the Redis it is
// compared with: not at all) and on RocksDB (WAL, no fsync: the default),
// each in its own directory under `dir` with its log there.
absl::StatusOr<std::vector<Server>> StartServers(const BenchServiceArgs& args,
                                                 const std::string& dir, uint64_t memory_bytes,
                                                 const std::vector<int>& cpus) {
  std::string server_bin = args.server_binary;
  if (server_bin.empty()) server_bin = ExecutableDir() + "/../service/qaqkv-server";
  std::vector<Server> servers(2);
  servers[0].name = "qaqkv-mem";
  servers[1].name = "qaqkv-disk";
  for (int i = 0; i < 2; ++i) {
    const std::string sub = absl::StrCat(dir, "/", servers[i].name);
    fs::create_directories(sub);
    std::vector<std::string> argv = {
        server_bin, "--listen=127.0.0.1:0", absl::StrCat("--port-file=", sub, "/port"),
        absl::StrCat("--memory-bytes=", memory_bytes), "--tenant-max-streams=0"};
    if (i == 0) {
      argv.push_back("--memory-only");
    } else {
      argv.push_back(absl::StrCat("--data-dir=", sub, "/db"));
      argv.push_back(absl::StrCat("--disk-bytes=", uint64_t(args.disk_mib) << 20));
      for (const std::string& flag : args.disk_server_flags) argv.push_back(flag);
    }
    QAQKV_ASSIGN_OR_RETURN(ChildProcess child,
                           ChildProcess::Spawn(argv, sub + "/server.log", cpus));
    servers[i].process.emplace(std::move(child));
    absl::StatusOr<int> port = WaitForPortFile(sub + "/port", *servers[i].process, absl::Seconds(30));
    if (!port.ok()) {
      return absl::Status(port.status().code(), absl::StrCat(port.status().message(), " (see ",
                                                             sub, "/server.log)"));
    }
    servers[i].port = *port;
  }
  return servers;
}

}  // namespace

int RunBenchService(const BenchServiceArgs& args) {
  Format format;
  if (absl::Status st = CheckArgs(args, &format); !st.ok()) {
    std::fprintf(stderr, "qaqkv bench service: %s\n", std::string(st.message()).c_str());
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);

  const qc::Geometry geometry = BenchGeometry(args);
  const std::string codec = "fp16";
  CodecConfig fp16;
  fp16.kind = CodecKind::kFp16;
  absl::StatusOr<std::vector<std::string>> made = RandomPages(
      fp16, {geometry.block_tokens, geometry.num_kv_heads, geometry.head_dim},
      geometry.num_layers, /*seed=*/7);
  if (!made.ok()) return Fail(made.status().ToString());
  const std::vector<std::string> pages = std::move(*made);
  const uint64_t op_bytes = pages.size() * pages[0].size();

  absl::StatusOr<base::TempDir> temp = base::TempDir::Create("qaqkv-bench-service");
  if (!temp.ok()) return Fail(temp.status().ToString());
  const std::string dir = temp->path();

  auto server_cpus = ParseCpuList(args.server_cpus, "--server-cpus");
  if (!server_cpus.ok()) {
    std::fprintf(stderr, "qaqkv bench service: %s\n",
                 std::string(server_cpus.status().message()).c_str());
    return 2;
  }
  const uint64_t memory_bytes = uint64_t(args.memory_mib) << 20;
  absl::StatusOr<std::vector<Server>> started =
      StartServers(args, dir, memory_bytes, *server_cpus);
  if (!started.ok()) {
    temp->Keep();  // its log tells why
    return Fail(started.status().ToString());
  }
  std::vector<Server> servers = std::move(*started);

  auto redis = StartRedis(args.redis_binary, dir + "/redis.log", *server_cpus);
  if (!redis.ok()) return Fail(redis.status().ToString());

  const int max_threads = *std::max_element(args.concurrency.begin(), args.concurrency.end());
  // One client per thread: one TCP connection per stream.
  for (Server& server : servers) {
    for (int t = 0; t < max_threads; ++t) {
      qc::ClientOptions o;
      o.target = absl::StrCat("127.0.0.1:", server.port);
      o.deadline = absl::Seconds(60);
      auto c = qc::Client::Create(o);
      if (!c.ok()) return Fail(c.status().ToString());
      server.clients.push_back(std::move(*c));
    }
  }
  std::vector<RedisConn> conns;
  for (int t = 0; t < max_threads; ++t) {
    auto c = RedisConnect(redis->port);
    if (!c.ok()) return Fail(c.status().ToString());
    conns.push_back(std::move(*c));
  }

  // Each thread's pages, built once: an operation only changes their block
  // key, so neither system pays for copying the bytes before sending them.
  std::vector<std::vector<qc::EncodedPage>> page_sets(max_threads);
  for (auto& set : page_sets) {
    for (size_t l = 0; l < pages.size(); ++l) set.push_back({{}, static_cast<int>(l), pages[l]});
  }
  auto qaqkv_put = [&](qc::Client& client, int t, const qc::BlockKey& key) -> std::string {
    std::vector<qc::EncodedPage>& set = page_sets[t];
    for (qc::EncodedPage& p : set) p.block = key;
    auto r = client.PutPages(geometry, codec, set);
    if (!r.ok()) return r.status().ToString();
    if (r->committed_blocks.size() != 1) return "qaqkv: block not committed";
    return "";
  };
  std::vector<std::string_view> page_views(pages.begin(), pages.end());
  auto redis_put = [&](int t, const qc::BlockKey& key) -> std::string {
    std::vector<std::string> keys;
    for (size_t l = 0; l < pages.size(); ++l) keys.push_back(RedisPageKey(key, static_cast<int>(l)));
    return Text(RedisSet(conns[t].get(), keys, page_views));
  };

  // The get working set: `working_blocks` blocks in both systems, stored
  // (again) before every get phase. Puts write new blocks, so a put phase
  // that ran first may have evicted them from the memory-only server.
  const int working = args.working_blocks;
  auto store_working_set = [&]() -> std::string {
    for (int b = 0; b < working; ++b) {
      for (Server& server : servers) {
        if (std::string e = qaqkv_put(*server.clients[0], 0, Key(1, 0, b)); !e.empty()) return e;
      }
      if (std::string e = redis_put(0, Key(1, 0, b)); !e.empty()) return e;
    }
    // Same bytes back before anything is timed.
    for (Server& server : servers) {
      std::vector<qc::BlockKey> one = {Key(1, 0, 0)};
      size_t seen = 0;
      absl::Status s = server.clients[0]->GetPages(
          one, 0, 0, [&](const qc::BlockKey&, int layer, std::string_view data) {
            if (data != pages[layer]) return absl::DataLossError("qaqkv returned different bytes");
            ++seen;
            return absl::OkStatus();
          });
      if (!s.ok() || seen != pages.size()) return absl::StrCat("verify: ", s.ToString());
    }
    return "";
  };

  // The plain-file reference: per-thread files for puts (appended to by
  // every run), and the get working set laid out in one file.
  const std::string working_file = dir + "/plain-working";
  {
    const int fd = open(working_file.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) return Fail(absl::StrCat("cannot create ", working_file));
    for (int b = 0; b < working; ++b) {
      for (const std::string& p : pages) {
        if (write(fd, p.data(), p.size()) != static_cast<ssize_t>(p.size())) {
          close(fd);
          return Fail(absl::StrCat("cannot write ", working_file));
        }
      }
    }
    close(fd);
  }
  // Put files grow through the whole bench, as the disk server's segments
  // do: truncating them each run would hand the next run the page-cache
  // pages just freed, while a store writing new data needs new ones (on
  // this development VM, a page the guest has not touched lately costs a
  // host fault, docs/performance.md).
  auto plain_run = [&](bool is_get, int c) -> RunResult {
    std::vector<int> fds(c, -1);
    for (int t = 0; t < c; ++t) {
      fds[t] = is_get ? open(working_file.c_str(), O_RDONLY)
                      : open(absl::StrCat(dir, "/plain-", t).c_str(),
                             O_CREAT | O_WRONLY | O_APPEND, 0644);
    }
    std::vector<std::string> bufs(c, std::string(op_bytes, '\0'));
    RunResult r = TimedRun(c, args.seconds, op_bytes, [&](int t, uint64_t i) -> std::string {
      if (fds[t] < 0) return "plain file: cannot open";
      if (is_get) {
        const uint64_t block = (i * 7919 + t * 31) % working;
        return pread(fds[t], bufs[t].data(), op_bytes, off_t(block * op_bytes)) ==
                       static_cast<ssize_t>(op_bytes)
                   ? ""
                   : "plain file: short read";
      }
      for (const std::string& p : pages) {
        if (write(fds[t], p.data(), p.size()) != static_cast<ssize_t>(p.size())) {
          return absl::StrCat("plain file: write failed: ", std::strerror(errno));
        }
      }
      return "";
    });
    for (int fd : fds) {
      if (fd >= 0) close(fd);
    }
    return r;
  };

  Report report({"op", "concurrency", "system", "MB_per_s", "p50_ms", "p99_ms", "vs_redis",
                 "vs_plain_file"});
  std::atomic<uint64_t> put_seq{0};
  bool failed = false;
  for (const std::string& op : args.ops) {
    const bool is_get = op == "get";
    if (is_get) {
      if (std::string e = store_working_set(); !e.empty()) return Fail(e);
    }
    for (int c : args.concurrency) {
      std::vector<std::vector<RunResult>> ours(servers.size());
      std::vector<RunResult> theirs, plain;
      for (int run = 0; run < args.runs; ++run) {
        // Every run starts with nothing dirty in the page cache (sync(2),
        // untimed): otherwise a writer inherits the writeback of the one
        // before it, which the kernel makes it wait for (the plain file's
        // puts write gigabytes in two seconds, and its truncate at the next
        // run throws its own backlog away unwritten).
        ::sync();
        plain.push_back(plain_run(is_get, c));
        for (size_t si = 0; si < servers.size(); ++si) {
          Server& server = servers[si];
          ::sync();
          ours[si].push_back(TimedRun(c, args.seconds, op_bytes, [&](int t, uint64_t i) -> std::string {
            qc::Client& client = *server.clients[t];
            if (is_get) {
              std::vector<qc::BlockKey> one = {Key(1, 0, (i * 7919 + t * 31) % working)};
              size_t n = 0;
              // In place, as a worker copying pages onward would read them
              // (the check above read them contiguous, byte for byte).
              absl::Status s = client.GetPagesInPlace(
                  one, 0, 0, [&](const qc::BlockKey&, int, const qc::PageBytes& data) {
                    n += data.size() == pages[0].size();
                    return absl::OkStatus();
                  });
              if (!s.ok()) return s.ToString();
              return n == pages.size() ? "" : "qaqkv: short read";
            }
            return qaqkv_put(client, t, Key(2 + si, t, put_seq.fetch_add(1)));
          }));
        }
        ::sync();
        theirs.push_back(TimedRun(c, args.seconds, op_bytes, [&](int t, uint64_t i) -> std::string {
          if (is_get) {
            const qc::BlockKey key = Key(1, 0, (i * 7919 + t * 31) % working);
            std::vector<std::string> keys;
            for (size_t l = 0; l < pages.size(); ++l) keys.push_back(RedisPageKey(key, int(l)));
            uint64_t got = 0;
            return Text(RedisGet(conns[t].get(), keys, pages[0].size(), &got));
          }
          // A bounded ring of keys per thread keeps Redis's memory in check;
          // an overwrite costs Redis what a new key does.
          return redis_put(t, Key(2, t, i % 16));
        }));
      }
      const RunResult b = Median(theirs);
      const RunResult f = Median(plain);
      auto vs = [](const RunResult& x, const RunResult& y) { return y.mbps > 0 ? x.mbps / y.mbps : 0.0; };
      for (size_t si = 0; si < servers.size(); ++si) {
        const RunResult a = Median(ours[si]);
        if (!a.error.empty()) {
          std::fprintf(stderr, "qaqkv bench service: %s %s %d: %s\n", servers[si].name.c_str(),
                       op.c_str(), c, a.error.c_str());
          failed = true;
        }
        report.Add({{std::string(op)}, {int64_t{c}}, {servers[si].name}, {a.mbps, 1},
                    {a.p50_ms, 3}, {a.p99_ms, 3}, {vs(a, b), 2}, {vs(a, f), 2}});
      }
      if (!b.error.empty()) {
        std::fprintf(stderr, "qaqkv bench service: redis %s %d: %s\n", op.c_str(), c, b.error.c_str());
        failed = true;
      }
      report.Add({{std::string(op)}, {int64_t{c}}, {std::string("redis")}, {b.mbps, 1},
                  {b.p50_ms, 3}, {b.p99_ms, 3}, {1.0, 2}, {vs(b, f), 2}});
      if (!f.error.empty()) {
        std::fprintf(stderr, "qaqkv bench service: plain file %s %d: %s\n", op.c_str(), c,
                     f.error.c_str());
        failed = true;
      }
      report.Add({{std::string(op)}, {int64_t{c}}, {std::string("plain-file")}, {f.mbps, 1},
                  {f.p50_ms, 3}, {f.p99_ms, 3}, {vs(f, b), 2}, {1.0, 2}});
    }
  }
  report.Print(format);
  for (Server& server : servers) {
    const uint64_t rss = server.process->PeakRssBytes();
    std::printf("%s peak RSS %.0f MiB; --memory-bytes %.0f MiB (+256 MiB allowance: %s)\n",
                server.name.c_str(), rss / 1048576.0, memory_bytes / 1048576.0,
                rss <= memory_bytes + (256ull << 20) ? "within" : "OVER");
  }
  std::printf("pages of %zu bytes, %d per operation; median of %d runs of %.1f s each\n",
              pages[0].size(), args.pages_per_op, args.runs, args.seconds);
  std::printf("servers (qaqkv and Redis) on CPUs: %s\n",
              server_cpus->empty() ? "all" : absl::StrJoin(*server_cpus, ",").c_str());
  for (Server& server : servers) {
    server.clients.clear();
    auto rc = server.process->Stop(SIGTERM, absl::Seconds(30));
    if (!rc.ok() || *rc != 0) {
      temp->Keep();
      return Fail(absl::StrCat(server.name, " did not stop cleanly (see ", dir, ")"));
    }
  }
  return failed ? 1 : 0;
}

}  // namespace qaqkv::tools
