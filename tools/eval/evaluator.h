// The quality evaluator behind `qaqkv eval` (protocol: docs/quality.md).
//
// Per sample and layer, the first `cache_fraction` of the tokens form the
// cache and are encoded with each codec; QAQ's side inputs come from the last
// `window` queries of that prefix; every later query attends to the decoded
// prefix plus its own exact tokens and is compared with exact attention.
#ifndef QAQKV_TOOLS_EVAL_EVALUATOR_H_
#define QAQKV_TOOLS_EVAL_EVALUATOR_H_

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/codec.h"
#include "tools/eval/kv_source.h"

namespace qaqkv::eval {

struct EvalOptions {
  double cache_fraction = 0.75;
  // Held-out queries evaluated per layer (evenly spaced); 0 = all of them.
  int max_queries = 0;
  // Encode the prefix as pages of this many tokens; 0 = one page.
  int page_tokens = 0;
  int threads = 2;
  // Called after each (sample, layer) with done/total units of work.
  std::function<void(int64_t done, int64_t total)> progress;
};

struct Metrics {
  double out_rel_err = 0;  // mean over (query, head) of |X^ - X| / |X|
  double attn_kl = 0;      // mean KL(S || S^), nats
  double top8 = 0;         // mean |top8(S) & top8(S^)| / 8
};

struct CodecResult {
  std::string codec;   // kind: fp16, int8, int4, kivi2, qaq
  std::string config;  // full name (CodecConfig::Name)
  int64_t fp16_bytes = 0;
  int64_t stored_bytes = 0;
  double bits_per_value = 0;  // honest: 8 * stored / values
  double ratio = 0;           // honest: fp16 bytes / stored bytes
  double ratio_paper = 0;     // 16 / (avg_bits * (1 - r) + 16 r)
  Metrics metrics;            // mean over samples and layers
  std::vector<Metrics> per_layer;  // mean over samples, per layer index
};

// The metrics above for one layer of `sample` when its first
// `prefix_tokens` tokens are replaced by k_hat, v_hat ([kv_heads][prefix]
// [head_dim], e.g. what a resumed session decoded), over held-out queries
// at positions [prefix_tokens, tokens), evenly spaced, at most `max_queries`
// (0: all).
absl::StatusOr<Metrics> CompareAttention(const KvSample& sample, int layer, int prefix_tokens,
                                         std::span<const float> k_hat,
                                         std::span<const float> v_hat, int max_queries);

absl::StatusOr<std::vector<CodecResult>> Evaluate(const std::vector<KvSample>& samples,
                                                  const std::vector<CodecConfig>& codecs,
                                                  const EvalOptions& options);

}  // namespace qaqkv::eval

#endif  // QAQKV_TOOLS_EVAL_EVALUATOR_H_
