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
  int memory_mib = 256;  // DRAM budget of the sustained-write run
  std::string dir;       // RocksDB directory; empty = a temporary one
  std::string format = "table";
};
int RunBenchStorage(const BenchStorageArgs& args);

// The default comparison set of `qaqkv eval` and `qaqkv bench codec`.
std::vector<std::string> DefaultCodecs();

}  // namespace qaqkv::tools

#endif  // QAQKV_TOOLS_COMMANDS_H_
