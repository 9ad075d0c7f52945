// `qaqkv`: the command line. Subcommands: demo (end to end against a
// server), eval (codec quality), bench (throughput), the operator's client
// commands (put, get, lookup, sessions, stats, replay, rebalance). See
// README.md and docs/.
#include <malloc.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "base/child_process.h"
#include "base/cli.h"
#include "base/mutex.h"
#include "qaqkv/client.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  // Pages are hundreds of KiB: above glibc's default mmap threshold, so every
  // page buffer would be a fresh mmap that page-faults on first touch. Keep
  // freed memory in the allocator instead (the service does the same).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  // Every subcommand's client side runs with the gRPC settings the client
  // library recommends; servers and Redis that the bench starts do not.
  qaqkv::base::SnapshotEnvironmentForChildren();
  qaqkv::client::UseRecommendedGrpcEnvironment();
  qaqkv::base::SkipMutexDeadlockDetectionWithNdebug();
  CLI::App app{"qaqkv: KV-cache offload with QAQ compression"};
  app.require_subcommand(1);

  qaqkv::tools::EvalArgs eval;
  CLI::App* ev = app.add_subcommand("eval", "Measure codec quality on real or synthetic KV");
  ev->add_option("paths", eval.paths, "safetensors files or directories (tinylm-kv format)");
  ev->add_option("--synthetic", eval.synthetic,
                 "generate KV of a geometry preset instead: llama2-7b, llama3-8b, qwen2.5-7b, tinylm");
  ev->add_option("--tokens", eval.tokens, "synthetic sequence length")->default_val(1024);
  ev->add_option("--seed", eval.seed, "synthetic seed")->default_val(1);
  ev->add_option("--layers", eval.layers, "evaluate only the first N layers (0 = all)");
  ev->add_option("--codecs", eval.codecs, "codec configs, e.g. int4 'qaq:s=1e-3,x=1e-3,o=0.01'");
  ev->add_flag("--sweep", eval.sweep, "grid over sigma_S x sigma_X x group level x outliers");
  ev->add_flag("--per-layer", eval.per_layer, "also print one row per layer");
  ev->add_option("--max-queries", eval.max_queries, "held-out queries per layer (0 = all)");
  ev->add_option("--page-tokens", eval.page_tokens, "encode the cache as pages of N tokens (0 = one page)");
  ev->add_option("--threads", eval.threads, "worker threads")->default_val(2);
  ev->add_option("--format", eval.format, "table, csv or json")->default_val("table");

  qaqkv::tools::BenchCodecArgs bench;
  CLI::App* bn = app.add_subcommand("bench", "Throughput benchmarks");
  bn->require_subcommand(1);
  CLI::App* bc = bn->add_subcommand("codec", "Encode/decode throughput against memcpy and zstd");
  bc->add_option("--geometry", bench.geometry, "geometry preset")->default_val("llama3-8b");
  bc->add_option("--tokens", bench.tokens, "tokens per page")->default_val(256);
  bc->add_option("--codecs", bench.codecs, "codec configs (default: the eval set)");
  bc->add_option("--repeats", bench.repeats, "timed runs per codec (0 = about 0.5 s each)");
  bc->add_option("--stream-mib", bench.stream_mib,
                 "MiB of fp16 KV in the streaming run (pages beyond the last-level cache)")
      ->default_val(128);
  bc->add_option("--format", bench.format, "table, csv or json")->default_val("table");

  qaqkv::tools::BenchStorageArgs bench_storage;
  CLI::App* bs = bn->add_subcommand("storage", "Page store reads and writes against memcpy and plain files");
  bs->add_option("--page-kib", bench_storage.page_kib, "page size")->default_val(256);
  bs->add_option("--pages", bench_storage.pages, "pages per measurement")->default_val(512);
  bs->add_option("--pages-per-put", bench_storage.pages_per_put,
                 "pages per put: one block's layers, stored together (with fsync, one flush a put)")
      ->default_val(8);
  bs->add_option("--memory-mib", bench_storage.memory_mib, "DRAM budget of the sustained-write run")
      ->default_val(256);
  bs->add_option("--startup-blocks", bench_storage.startup_blocks,
                 "also store this many one-page blocks and time the store's open (0: skip)")
      ->default_val(0);
  bs->add_option("--dir", bench_storage.dir, "directory for RocksDB (default: a temporary one)");
  bs->add_option("--format", bench_storage.format, "table, csv or json")->default_val("table");

  qaqkv::tools::BenchServiceArgs bench_service;
  CLI::App* bv = bn->add_subcommand(
      "service", "qaqkv-server put/get against Redis 7 on loopback, same bytes, same run");
  bv->add_option("--page-kib", bench_service.page_kib, "page size (multiple of 8)")->default_val(256);
  bv->add_option("--pages-per-op", bench_service.pages_per_op, "pages per put/get (one block)")
      ->default_val(8);
  bv->add_option("--concurrency", bench_service.concurrency, "client threads, one connection each")
      ->default_val(std::vector<int>{1, 4, 16});
  bv->add_option("--ops", bench_service.ops, "operations to measure (get, put)")
      ->check(CLI::IsMember({"get", "put"}))
      ->default_val(std::vector<std::string>{"get", "put"});
  bv->add_option("--seconds", bench_service.seconds, "measured seconds per run")->default_val(2.0);
  bv->add_option("--runs", bench_service.runs, "runs per point (median reported)")->default_val(3);
  bv->add_option("--working-blocks", bench_service.working_blocks, "blocks the gets read")
      ->default_val(64);
  bv->add_option("--memory-mib", bench_service.memory_mib, "qaqkv-server DRAM budget")
      ->default_val(512);
  bv->add_option("--disk-mib", bench_service.disk_mib, "qaqkv-server disk budget")->default_val(4096);
  bv->add_option("--server-binary", bench_service.server_binary, "qaqkv-server to start");
  bv->add_option("--disk-server-flag", bench_service.disk_server_flags,
                 "a flag for the disk-mode qaqkv-server (repeatable), e.g. --segment-lanes=1")
      ->allow_extra_args(false);
  bv->add_option("--redis-binary", bench_service.redis_binary, "redis-server to start")
      ->default_val("redis-server");
  bv->add_option("--server-cpus", bench_service.server_cpus,
                 "CPUs the servers (qaqkv and Redis alike) run on: last, all, or e.g. 0,2-3")
      ->default_val("last");
  bv->add_option("--format", bench_service.format, "table, csv or json")->default_val("table");

  qaqkv::tools::DemoArgs demo;
  CLI::App* dm = app.add_subcommand(
      "demo", "Offload and resume chat sessions through a running qaqkv-server, QAQ against fp16");
  dm->add_option("--target", demo.target, "qaqkv-server address")->default_val("127.0.0.1:7070");
  dm->add_option("--token", demo.token, "bearer token")->envname("QAQKV_TOKEN");
  dm->add_option("--geometry", demo.geometry, "synthetic geometry preset")->default_val("llama3-8b");
  dm->add_option("--tokens", demo.tokens, "synthetic session length (multiple of 256)")
      ->default_val(4096);
  dm->add_option("--held-out", demo.held_out, "held-out tokens after the session")->default_val(256);
  dm->add_option("--seed", demo.seed, "synthetic seed")->default_val(1);
  dm->add_option("--data", demo.data, "tinylm-kv directory (real KV); empty to skip");
  dm->add_option("--codec", demo.codec, "QAQ config of the synthetic session")
      ->default_val("qaq-cc:s=1e-4,x=1e-2,o=0");
  dm->add_option("--tinylm-codec", demo.tinylm_codec, "QAQ config of the tinylm-kv sessions")
      ->default_val("qaq-cs:s=5e-4,x=2e-4,o=0");
  dm->add_option("--max-queries", demo.max_queries, "held-out queries per layer")->default_val(32);
  dm->add_option("--link-gbps", demo.link_gbps,
                 "link speeds (Gb/s) to also resume the synthetic session over, client-paced")
      ->delimiter(',');
  dm->add_option("--format", demo.format, "table, csv or json")->default_val("table");

  // The subcommands that talk to a server share the connection options:
  // the credentials and the call deadline, then how the servers are named.
  auto add_credentials = [](CLI::App* c, qaqkv::tools::ConnectArgs& a) {
    c->add_option("--token", a.token, "bearer token")->envname("QAQKV_TOKEN");
    c->add_option("--tls-ca", a.tls_ca, "PEM CA of the server certificate (turns TLS on)");
    c->add_option("--tls-cert", a.tls_cert, "client certificate (mTLS)");
    c->add_option("--tls-key", a.tls_key, "client key (mTLS)");
    c->add_option("--tls-server-name", a.tls_server_name, "name to check in the server certificate");
    c->add_option("--deadline", a.deadline_s, "seconds per call")->default_val(a.deadline_s);
  };
  auto add_conn = [&](CLI::App* c, qaqkv::tools::ConnectArgs& a) {
    c->add_option("--target", a.target, "qaqkv-server address")->default_val("127.0.0.1:7070");
    add_credentials(c, a);
    c->add_option("--servers", a.servers,
                  "several servers, comma-separated host:port (sharded; overrides --target)")
        ->delimiter(',');
    c->add_option("--discovery", a.discovery,
                  "DNS name:port whose every address is a server (e.g. a headless Service)");
    c->add_option("--replicas", a.replicas, "copies of each block (0: 2, or 1 with one server)")
        ->default_val(0);
    c->add_option("--write-quorum", a.write_quorum, "replicas that must acknowledge (0: all)")
        ->default_val(0);
  };
  qaqkv::tools::PutArgs put;
  CLI::App* pt = app.add_subcommand("put", "Offload a safetensors KV file as a session");
  add_conn(pt, put.conn);
  pt->add_option("file", put.file, "safetensors KV file (tinylm-kv format)")->required();
  pt->add_option("--session", put.session, "session id")->required();
  pt->add_option("--codec", put.codec, "codec config")->default_val("qaq");
  pt->add_option("--block-tokens", put.block_tokens, "tokens per block")->default_val(256);
  pt->add_option("--fingerprint", put.fingerprint, "model fingerprint hashed into block keys")
      ->default_val("tinylm");
  pt->add_option("--ttl", put.ttl_s, "session TTL in seconds (0: none)")->default_val(0);
  qaqkv::tools::GetArgs get;
  CLI::App* gt = app.add_subcommand("get", "Resume a session and report it");
  add_conn(gt, get.conn);
  gt->add_option("--session", get.session, "session id")->required();
  gt->add_option("--compare", get.compare, "safetensors file to compare the resumed KV with");
  qaqkv::tools::LookupArgs lookup;
  CLI::App* lk = app.add_subcommand("lookup", "How many leading blocks of a prompt are cached");
  add_conn(lk, lookup.conn);
  lk->add_option("file", lookup.file, "safetensors KV file whose token ids make the keys");
  lk->add_option("--keys", lookup.keys, "block keys as 32 hex digits, in chain order");
  lk->add_option("--codec", lookup.codec, "codec config")->default_val("qaq");
  lk->add_option("--block-tokens", lookup.block_tokens, "tokens per block")->default_val(256);
  lk->add_option("--fingerprint", lookup.fingerprint, "model fingerprint")->default_val("tinylm");
  lk->add_flag("-v,--verbose", lookup.verbose, "print every key");
  qaqkv::tools::SessionsArgs sessions;
  CLI::App* ss = app.add_subcommand("sessions", "List, show, delete or touch sessions");
  add_conn(ss, sessions.conn);
  ss->add_option("action", sessions.action, "list, show, delete or touch")
      ->check(CLI::IsMember({"list", "show", "delete", "touch"}))
      ->default_val("list");
  ss->add_option("id", sessions.id, "session id (show, delete, touch)");
  ss->add_option("--limit", sessions.limit, "list at most this many (0: server default)");
  qaqkv::tools::StatsArgs stats;
  CLI::App* st = app.add_subcommand("stats", "Server usage, tier hits, evictions, checksum failures");
  add_conn(st, stats.conn);
  st->add_option("--format", stats.format, "table, csv or json")->default_val("table");

  qaqkv::tools::ReplayArgs replay;
  CLI::App* rp = app.add_subcommand("replay", "Replay a request trace against a server (and Redis)");
  replay.conn.deadline_s = 120;
  add_conn(rp, replay.conn);
  rp->add_option("--trace", replay.trace, "JSONL trace (Mooncake format)")
      ->default_val("data/mooncake_synthetic_trace.jsonl");
  rp->add_option("--requests", replay.requests, "first N requests (0: all)")->default_val(0);
  rp->add_option("--layers", replay.layers, "layers per block")->default_val(4);
  rp->add_option("--kv-heads", replay.kv_heads, "KV heads")->default_val(2);
  rp->add_option("--head-dim", replay.head_dim, "head dimension")->default_val(64);
  rp->add_option("--block-tokens", replay.block_tokens, "tokens per block")->default_val(512);
  rp->add_option("--codec", replay.codec, "codec of the pages")->default_val("qaq");
  rp->add_option("--concurrency", replay.concurrency, "requests in flight")->default_val(4);
  rp->add_option("--time-scale", replay.time_scale, "replay timestamps divided by this (0: no waits)")
      ->default_val(0);
  rp->add_option("--salt", replay.salt, "block-key salt (0: fresh, a cold cache)")->default_val(0);
  rp->add_flag("--redis", replay.redis, "also replay against a redis-server started here");
  rp->add_option("--redis-binary", replay.redis_binary, "redis-server to start")
      ->default_val("redis-server");
  rp->add_option("--format", replay.format, "table, csv or json")->default_val("table");

  qaqkv::tools::RebalanceArgs rebalance;
  CLI::App* rb = app.add_subcommand(
      "rebalance",
      "Restore R copies of every block and session on its owners among --servers "
      "(after a server or volume is lost, after a scale-up, before a scale-down with --draining)");
  rebalance.conn.deadline_s = 120;
  add_credentials(rb, rebalance.conn);
  rb->add_option("--servers", rebalance.conn.servers,
                 "the cluster after the change, comma-separated host:port, named as the "
                 "workers name them")
      ->delimiter(',')
      ->required();
  rb->add_option("--draining", rebalance.draining,
                 "servers leaving (a scale-down), comma-separated host:port: their data goes to "
                 "the owners among --servers and they keep nothing")
      ->delimiter(',');
  rb->add_option("--replicas", rebalance.conn.replicas,
                 "copies of each block, as the workers set it (0: 2, or 1 with one server)")
      ->default_val(0);
  rb->add_option("--token-file", rebalance.token_file,
                 "`<token> <tenant>` per line (the servers' --auth-tokens file): one run per "
                 "tenant (default: --token's tenant, or \"default\" without a token)");
  rb->add_option("--max-bytes-per-second", rebalance.max_bytes_per_second,
                 "copy rate of page bytes, e.g. 100MiB (0: no limit)")
      ->check(qaqkv::base::ByteSize())
      ->default_val("0");
  rb->add_option("--batch-blocks", rebalance.batch_blocks, "blocks per copy stream")
      ->default_val(256);
  rb->add_flag("--keep-misplaced", rebalance.keep_misplaced,
               "only copy: leave copies on servers that do not own them");
  rb->add_option("--progress-interval", rebalance.progress_interval,
                 "print progress (JSON, stderr) at most this often (0: every batch)")
      ->check(qaqkv::base::Duration())
      ->default_val("10s");
  rb->add_option("--metrics-listen", rebalance.metrics_listen,
                 "host:port serving progress as Prometheus gauges (qaqkv_rebalance_*) while it runs");
  rb->add_option("--metrics-linger", rebalance.metrics_linger,
                 "keep --metrics-listen up this long after the last tenant, for a last scrape")
      ->check(qaqkv::base::Duration())
      ->default_val("0s");

  // The server's command-line convention (base/cli.h): dashes or
  // underscores, --config files, exit 2 naming the flag.
  absl::StatusOr<std::vector<std::string>> args = qaqkv::base::ExpandArgs(argc, argv);
  if (!args.ok()) {
    std::fprintf(stderr, "qaqkv: %s\n", std::string(args.status().message()).c_str());
    return 2;
  }
  std::string error;
  if (std::optional<int> rc = qaqkv::base::ParseArgs(app, *args, &error)) {
    if (!error.empty()) std::fprintf(stderr, "qaqkv: %s\n", error.c_str());
    return *rc;
  }
  if (dm->parsed()) return qaqkv::tools::RunDemo(demo);
  if (rp->parsed()) return qaqkv::tools::RunReplay(replay);
  if (rb->parsed()) return qaqkv::tools::RunRebalance(rebalance);
  if (pt->parsed()) return qaqkv::tools::RunPut(put);
  if (gt->parsed()) return qaqkv::tools::RunGet(get);
  if (lk->parsed()) return qaqkv::tools::RunLookup(lookup);
  if (ss->parsed()) return qaqkv::tools::RunSessions(sessions);
  if (st->parsed()) return qaqkv::tools::RunStats(stats);
  if (ev->parsed()) return qaqkv::tools::RunEval(eval);
  if (bc->parsed()) return qaqkv::tools::RunBenchCodec(bench);
  if (bs->parsed()) return qaqkv::tools::RunBenchStorage(bench_storage);
  if (bv->parsed()) return qaqkv::tools::RunBenchService(bench_service);
  return 2;
}
