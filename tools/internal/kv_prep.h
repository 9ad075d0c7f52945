// Turning evaluation samples (fp32, [kv_heads][tokens][head_dim]) into what
// an inference worker holds (fp16 NHD buffers per layer) and QAQ's side
// inputs, for the commands that move real KV through the service.
#ifndef QAQKV_TOOLS_INTERNAL_KV_PREP_H_
#define QAQKV_TOOLS_INTERNAL_KV_PREP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/codec.h"
#include "tools/eval/kv_source.h"

namespace qaqkv::tools {

// fp16 NHD buffers ([tokens, kv_heads, head_dim]) per layer.
struct HostBuffers {
  std::vector<std::vector<uint16_t>> k, v;
};

// The first `tokens` tokens of every layer of `s`.
HostBuffers ToFp16Nhd(const eval::KvSample& s, int tokens);

// [kv_heads][tokens][head_dim] fp32 of one layer's fp16 NHD buffer.
std::vector<float> ToFloatHnd(const std::vector<uint16_t>& nhd, int tokens, int kv_heads,
                              int head_dim);

// `count` pages of `shape` holding random normal K and V (fp32 in, seeded),
// encoded by `config`: the bytes the service benchmarks and the replay send,
// each operation reusing them under new block keys.
absl::StatusOr<std::vector<std::string>> RandomPages(const CodecConfig& config,
                                                     const PageShape& shape, int count,
                                                     uint32_t seed);

// QAQ's side inputs per layer for the prefix [0, P), as `qaqkv eval` computes
// them: attention of the last `cfg.window` prefix queries, Q2 over every
// prefix query (90th percentile).
absl::Status SideInputs(const eval::KvSample& s, int P, const CodecConfig& cfg,
                        std::vector<std::vector<float>>* attention,
                        std::vector<std::vector<float>>* q2);

}  // namespace qaqkv::tools

#endif  // QAQKV_TOOLS_INTERNAL_KV_PREP_H_
