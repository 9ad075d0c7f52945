// Subcommands of the `qaqkv` command line. Each returns the process exit code:
// 0 on success, 2 on bad input (one clear line on stderr), 1 otherwise.
#ifndef QAQKV_TOOLS_COMMANDS_H_
#define QAQKV_TOOLS_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace qaqkv::tools {

struct EvalArgs {
  std::vector<std::string> paths;
  std::string synthetic;  // geometry preset; empty = use paths
  int tokens = 1024;
  uint64_t seed = 1;
  int layers = 0;
  std::vector<std::string> codecs;
  bool sweep = false;
  bool per_layer = false;
  int max_queries = 0;
  int page_tokens = 0;
  int threads = 2;
  std::string format = "table";
};
int RunEval(const EvalArgs& args);

struct BenchCodecArgs {
  std::string geometry = "llama3-8b";
  int tokens = 256;
  std::vector<std::string> codecs;
  int repeats = 0;  // 0 = enough for about half a second per codec
  int stream_mib = 128;  // fp16 bytes of the streaming run (beyond the LLC)
  std::string format = "table";
};
int RunBenchCodec(const BenchCodecArgs& args);

struct BenchStorageArgs {
  int page_kib = 256;
  int pages = 512;
  int pages_per_put = 8;  // pages of one block stored by one PutPages (as bench service's ops)
  int memory_mib = 256;  // DRAM budget of the sustained-write run
  int startup_blocks = 0;  // > 0: time a store's open with this many blocks stored
  std::string dir;       // RocksDB directory; empty = a temporary one
  std::string format = "table";
};
int RunBenchStorage(const BenchStorageArgs& args);

struct BenchServiceArgs {
  int page_kib = 256;
  int pages_per_op = 8;          // pages moved by one operation (one block)
  std::vector<int> concurrency = {1, 4, 16};
  std::vector<std::string> ops = {"get", "put"};  // which operations to measure
  double seconds = 2.0;          // measured time per run
  int runs = 3;                  // the median is reported
  int working_blocks = 64;       // blocks the gets read from
  int memory_mib = 512;          // qaqkv-server --memory-bytes
  int disk_mib = 4096;           // qaqkv-server --disk-bytes (puts evict past it)
  std::string server_binary;     // default: next to qaqkv
  // More flags for the disk-mode qaqkv-server (e.g. "--segment-lanes=1"),
  // to compare its settings in the same run of everything else.
  std::vector<std::string> disk_server_flags;
  std::string redis_binary = "redis-server";
  // CPUs every server the bench starts runs on (ParseCpuList): by default
  // one, the same for qaqkv and Redis, so each server has at most a core,
  // as Redis's single thread does, and the clients keep the others.
  std::string server_cpus = "last";
  std::string format = "table";
};
int RunBenchService(const BenchServiceArgs& args);

struct DemoArgs {
  std::string target = "127.0.0.1:7070";
  std::string token;                 // bearer token, when the server has --auth-tokens
  std::string geometry = "llama3-8b";
  int tokens = 4096;                 // synthetic session length
  int held_out = 256;                // synthetic held-out tokens after it
  uint64_t seed = 1;
  std::string data;                  // tinylm-kv directory; empty: skip
  // QAQ configs calibrated per model with `qaqkv eval` (docs/quality.md):
  // both beat int4 on ratio and on attention-output error for their data.
  std::string codec = "qaq-cc:s=1e-4,x=1e-2,o=0";         // synthetic llama3-8b
  std::string tinylm_codec = "qaq-cs:s=5e-4,x=2e-4,o=0";  // tinylm-kv
  int max_queries = 32;              // held-out queries per layer for the error
  // Link speeds (Gb/s) the synthetic session is also resumed over, each by a
  // client paced to that speed (ClientOptions::link_bytes_per_second).
  std::vector<double> link_gbps = {100, 25, 10};
  std::string format = "table";
};
int RunDemo(const DemoArgs& args);

// How the client subcommands reach the server(s).
struct ConnectArgs {
  std::string target = "127.0.0.1:7070";
  // Several servers (sharded, replicated; overrides target), or a DNS name
  // whose every address is a server.
  std::vector<std::string> servers;
  std::string discovery;
  int replicas = 0;      // 0: the client's default (2, or 1 with one server)
  int write_quorum = 0;  // 0: all replicas
  std::string token;            // bearer token (or $QAQKV_TOKEN)
  std::string tls_ca;           // PEM roots; with it (or a client cert) TLS is on
  std::string tls_cert, tls_key;  // client certificate for mTLS
  std::string tls_server_name;  // override the name checked in the server cert
  double deadline_s = 60;
};

struct PutArgs {
  ConnectArgs conn;
  std::string file;  // safetensors KV (tinylm-kv format, with token ids)
  std::string session;
  std::string codec = "qaq";
  int block_tokens = 256;
  std::string fingerprint = "tinylm";  // model fingerprint in the block keys
  double ttl_s = 0;
};
int RunPut(const PutArgs& args);

struct GetArgs {
  ConnectArgs conn;
  std::string session;
  std::string compare;  // safetensors file to compare the resumed KV with
};
int RunGet(const GetArgs& args);

struct LookupArgs {
  ConnectArgs conn;
  std::string file;
  std::vector<std::string> keys;  // hex block keys
  std::string codec = "qaq";
  int block_tokens = 256;
  std::string fingerprint = "tinylm";
  bool verbose = false;
};
int RunLookup(const LookupArgs& args);

struct SessionsArgs {
  ConnectArgs conn;
  std::string action = "list";  // list, show, delete, touch
  std::string id;
  int64_t limit = 0;  // signed, so that a negative --limit is caught, not wrapped
};
int RunSessions(const SessionsArgs& args);

struct StatsArgs {
  ConnectArgs conn;
  std::string format = "table";
};
int RunStats(const StatsArgs& args);

struct ReplayArgs {
  ConnectArgs conn;  // deadline_s defaults to 120 here
  std::string trace = "data/mooncake_synthetic_trace.jsonl";
  int requests = 0;          // 0: all
  int layers = 4;            // scaled-down geometry of every block
  int kv_heads = 2;
  int head_dim = 64;
  int block_tokens = 512;    // the trace's blocks
  std::string codec = "qaq";
  int concurrency = 4;
  double time_scale = 0;     // 0: as fast as possible; N: timestamps / N
  uint64_t salt = 0;         // block-key salt; 0: a fresh one (cold cache)
  bool redis = false;        // replay against Redis 7 too
  std::string redis_binary = "redis-server";
  std::string format = "table";
};
int RunReplay(const ReplayArgs& args);

// Client::Rebalance for one tenant (conn.token; none: "default") or for
// every tenant of a token file. Exit 1 when a run failed or a report
// counts errors.
struct RebalanceArgs {
  ConnectArgs conn;  // conn.servers: the cluster after the change (required)
  std::vector<std::string> draining;  // servers leaving
  std::string token_file;             // `<token> <tenant>` lines: one run per tenant
  std::string max_bytes_per_second = "0";  // a size (100MiB); 0: no limit
  int batch_blocks = 256;
  bool keep_misplaced = false;  // RebalanceOptions::remove_misplaced = false
  std::string progress_interval = "10s";  // stderr progress at most this often
  // "host:port" serving the reports so far as Prometheus gauges; empty: off.
  std::string metrics_listen;
  // How long the endpoint stays up after the last tenant (for a last scrape).
  std::string metrics_linger = "0s";
};
int RunRebalance(const RebalanceArgs& args);

// The default comparison set of `qaqkv eval` and `qaqkv bench codec`.
std::vector<std::string> DefaultCodecs();

}  // namespace qaqkv::tools

#endif  // QAQKV_TOOLS_COMMANDS_H_
