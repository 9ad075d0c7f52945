// `qaqkv`: the command line. Subcommands: eval (codec quality), bench
// (throughput). See README.md and docs/.
#include <malloc.h>

#include <cstdio>

#include "CLI/CLI.hpp"
#include "tools/commands.h"

int main(int argc, char** argv) {
  // Pages are hundreds of KiB: above glibc's default mmap threshold, so every
  // page buffer would be a fresh mmap that page-faults on first touch. Keep
  // freed memory in the allocator instead (the service does the same).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
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
  bs->add_option("--memory-mib", bench_storage.memory_mib, "DRAM budget of the sustained-write run")
      ->default_val(256);
  bs->add_option("--dir", bench_storage.dir, "directory for RocksDB (default: a temporary one)");
  bs->add_option("--format", bench_storage.format, "table, csv or json")->default_val("table");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (ev->parsed()) return qaqkv::tools::RunEval(eval);
  if (bc->parsed()) return qaqkv::tools::RunBenchCodec(bench);
  if (bs->parsed()) return qaqkv::tools::RunBenchStorage(bench_storage);
  return 2;
}
