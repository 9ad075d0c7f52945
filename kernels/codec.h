// The one entry point of the qaqkv codecs.
//
// A page is the K and V of one layer of one block: `tokens x kv_heads x head_dim`
// values each. `EncodePage` turns a page into self-describing bytes (see
// docs/page-format.md); `DecodePage` turns such bytes back into values. Every
// parameter is validated here, once, before any backend runs.
//
// Thread-safety: all functions are pure; they may be called concurrently on
// distinct output buffers.
#ifndef QAQKV_KERNELS_CODEC_H_
#define QAQKV_KERNELS_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qaqkv {

enum class DType : uint8_t { kF16 = 1, kBF16 = 2, kF32 = 3 };
// NHD: [tokens, kv_heads, head_dim]; HND: [kv_heads, tokens, head_dim].
enum class Layout : uint8_t { kNHD = 0, kHND = 1 };

enum class CodecKind : uint8_t {
  kFp16 = 0,   // exact fp16 copy
  kInt8 = 1,   // per-group asymmetric 8-bit, QAQ's group
  kInt4 = 2,   // per-group asymmetric 4-bit, QAQ's group
  kKivi2 = 3,  // KIVI: keys per channel, values per token, 2 bits, fp16 residual
  kQaq = 4,    // QAQ: per-group adaptive widths, exact outliers
};

// Which values share one bit width, scale and offset (docs/qaq.md section 2).
enum class GroupLevel : uint8_t {
  kHead = 0,   // one token of one KV head: head_dim values
  kLayer = 1,  // one token across all KV heads: kv_heads * head_dim values
};

// A codec and its knobs. `Name()` of a config round-trips through
// `ParseCodecConfig`, so configs can be named on the command line.
struct CodecConfig {
  CodecKind kind = CodecKind::kQaq;
  GroupLevel group = GroupLevel::kHead;
  // QAQ quality targets: attention-score error (keys) and output error (values).
  float sigma_s = 1e-3f;
  float sigma_x = 1e-3f;
  int b_min = 0;  // 0..8
  int b_max = 8;  // b_min..8
  // Share of each group kept exact: ceil(outlier_ratio / 2 * N) smallest and as
  // many largest values.
  float outlier_ratio = 0.01f;
  // Variant `qaq-cs` (beyond the paper): keys are divided by a per-channel fp16
  // scale (max |k| of the channel over the page) before per-token
  // quantization, since key outliers sit in fixed channels.
  bool key_channel_scale = false;
  // Variant `qaq-cc` (beyond the paper): the per-channel mean of the keys over
  // the page (fp16) is subtracted before per-token quantization and added
  // back on decode. LLaMA-family key outliers are mostly large constant
  // offsets in fixed channels; centering removes them from every token's
  // range without amplifying the error the way scaling does.
  bool key_channel_center = false;
  // Variant `-rh` (beyond the paper; int8, int4, qaq): every row of head_dim
  // values (keys and values) is rotated by a fixed randomized Hadamard
  // transform before quantization and rotated back on decode. The rotation
  // keeps q . k and each row's L2 error, and spreads outlier channels over
  // the row, so the quantized range shrinks. Pages with it are format
  // version 2 (docs/page-format.md). Not with `-cs`.
  bool rotate = false;
  // Variant `qaq-ec` (issue 19, page format version 2): QAQ's error bounds
  // with an entropy-coded scalar quantizer. Every value of a token's group
  // is rounded to a multiple of that group's step (sqrt(12) sigma, so the
  // error is at most half of it) around its channel's page mean, and the
  // codes are rANS-coded; no per-group offset, step or width is stored
  // beyond one byte of step. Head-level groups, no outliers, no -cs/-cc
  // (every channel is centred anyway); takes -rh. b_min > 0 is a floor on
  // precision: no token's step exceeds its row's range / 2^b_min, as a
  // min-max group of b_min bits would have (b_max must stay 8).
  bool entropy_coded = false;
  // QAQ attention window n: how many recent queries predict a token's
  // attention. Used by whoever computes the side inputs (ComputeWindowStats,
  // the evaluator); not stored in the page.
  int window = 5;
  // KIVI knobs.
  int kivi_group = 32;
  int kivi_residual = 128;

  std::string Name() const;
};

// Parses "fp16", "int8", "int4", "kivi2", "kivi2:r=32", "qaq", "qaq-layer",
// "qaq-cs", "qaq:s=7e-4,x=2e-4,o=0,b=0-8", ... (see docs/quality.md).
absl::StatusOr<CodecConfig> ParseCodecConfig(std::string_view text);

// QAQ's side inputs for one page. Absent (empty) inputs take documented
// defaults: every token counts as highly attended (a_t = 1) and Q2 = kDefaultQ2.
struct QaqSideInputs {
  // Predicted attention a_t per (token, kv_head), token-major:
  // attention[t * kv_heads + h]. A negative value means "fewer than n
  // observations": the token gets b_max (docs/qaq.md section 2).
  std::span<const float> attention;
  // Squared norm of the scaled query q / sqrt(head_dim), per KV head.
  std::span<const float> q2;
  // Context length T used by the bounds; 0 means the page's token count.
  int64_t context_tokens = 0;
};

inline constexpr float kDefaultQ2 = 1.0f;

struct PageShape {
  int tokens = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int64_t values() const { return int64_t{tokens} * kv_heads * head_dim; }
};

// Input or output tensor view: `data` points at `shape.values()` elements of
// `dtype`, arranged as `layout`. The caller owns the memory.
struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kF16;
  Layout layout = Layout::kNHD;
};
struct MutableTensorView {
  void* data = nullptr;
  DType dtype = DType::kF16;
  Layout layout = Layout::kNHD;
};

enum class Backend : uint8_t {
  kAuto = 0,       // fastest CPU path this machine supports
  kReference = 1,  // plain scalar loops: the oracle
  kFast = 2,       // vectorized CPU path (AVX2 / AVX-512 chosen at run time)
};

// Encodes K and V of one page. Errors: kInvalidArgument for a bad shape,
// config or side input (the message names the field), or for a finite input
// value beyond fp16's range. NaN and Inf inputs are legal: a group holding one
// is stored exactly as fp16 (bit width 16), so they decode bit-exactly.
absl::StatusOr<std::vector<uint8_t>> EncodePage(const CodecConfig& config,
                                                const PageShape& shape, TensorView k,
                                                TensorView v,
                                                const QaqSideInputs& side = {},
                                                Backend backend = Backend::kAuto);

// EncodePage into a caller's buffer, for callers that encode page after page:
// `page` is resized to the page and overwritten, so a buffer kept from an
// earlier page of at least the same size is reused without being allocated
// or cleared again. On an error `page`'s contents are unspecified.
absl::Status EncodePageInto(const CodecConfig& config, const PageShape& shape, TensorView k,
                            TensorView v, const QaqSideInputs& side, Backend backend,
                            std::vector<uint8_t>& page);

// What a page says about itself, read from its header after the checksum
// passed. Errors: kDataLoss (truncated or checksum mismatch), kInvalidArgument
// (unknown version or codec, impossible header fields).
struct PageInfo {
  int version = 0;
  CodecKind kind = CodecKind::kQaq;
  GroupLevel group = GroupLevel::kHead;
  PageShape shape;
  size_t encoded_bytes = 0;
};
absl::StatusOr<PageInfo> InspectPage(std::span<const uint8_t> page);

// InspectPage, plus everything DecodePage checks before it decodes: both
// sections parse, every size inside them adds up, and every value a decoder
// trusts (widths, outlier indices, exact-group lists, offsets, steps) is in
// range, so DecodePage of this page cannot fail. Nothing is decoded; a
// cache verifies pages this way before it stores them. With `expected`, the
// page's shape must be that one; with `config`, the page must also be what
// `config` writes for that shape: codec kind, group level, key transform,
// outliers per group and KIVI parameters. Either mismatch is
// kInvalidArgument naming what differs; other errors as DecodePage.
absl::StatusOr<PageInfo> VerifyPage(std::span<const uint8_t> page,
                                    const CodecConfig* config = nullptr,
                                    const PageShape* expected = nullptr);

// Decodes a page into caller buffers of `shape.values()` elements each, in any
// layout and dtype. Never reads outside `page` or writes outside the outputs.
// Errors: as InspectPage, plus kInvalidArgument when `expected` (if given)
// disagrees with the page, and kDataLoss when internal sizes do not add up.
// After an error the outputs hold their earlier contents or zeros, never
// values of a page that failed its checksum (fp16 pages are checked while
// they are copied, and the outputs zeroed on a mismatch).
absl::Status DecodePage(std::span<const uint8_t> page, MutableTensorView k,
                        MutableTensorView v, const PageShape* expected = nullptr,
                        Backend backend = Backend::kAuto);

// Honest size accounting (docs/qaq.md section 6) of an encoded page.
struct PageStats {
  int64_t values = 0;          // K and V values in the page
  int64_t encoded_bytes = 0;   // every byte stored, headers included
  int64_t outliers = 0;        // values kept exact as outliers
  int64_t exact_values = 0;    // values in width-16 groups or fp16 residual
  double code_bits = 0;        // sum over quantized values of their width
  double ratio() const { return values * 2.0 / encoded_bytes; }
  // The paper's convention: avg_bits * (1 - r) + 16 r per value, no metadata.
  double paper_bits_per_value() const;
};
absl::StatusOr<PageStats> ComputePageStats(std::span<const uint8_t> page);

// ---- QAQ side inputs from what a worker has at hand ------------------------
//
// Engines with fused attention never materialize attention probabilities.
// From the last `n` queries (after RoPE, unscaled) and the keys of the
// context, compute per (token, kv_head) the max attention over those queries
// and over the query heads of the KV head's group, and per KV head the 90th
// percentile of |q / sqrt(D)|^2. Tokens seen by fewer than `n` of the queries
// get -1 (=> b_max).
struct WindowInputs {
  int context_tokens = 0;  // T: keys cover positions [0, T)
  int kv_heads = 0;
  int q_heads = 0;  // multiple of kv_heads; q head j reads kv head j / (q/kv)
  int head_dim = 0;
  // keys[t][kv_head][d] (NHD), fp32.
  std::span<const float> keys;
  // queries[i][q_head][d], fp32, for positions query_positions[i] (< T, causal).
  std::span<const float> queries;
  std::span<const int> query_positions;
};
struct WindowStats {
  std::vector<float> attention;  // [T * kv_heads], token-major
  std::vector<float> q2;         // [kv_heads]
};
absl::StatusOr<WindowStats> ComputeWindowStats(const WindowInputs& in);

// Q2 per KV head from any set of queries `queries[i][q_head][d]` (after RoPE,
// unscaled): the `percentile` (in (0, 1]) of |q / sqrt(D)|^2 over the queries
// and the query heads of each KV head's group. The paper measures this
// percentile over the model's query distribution; a worker can feed every
// query of the prefix, which is steadier than the window alone.
absl::StatusOr<std::vector<float>> ComputeQ2(std::span<const float> queries, int q_heads,
                                             int kv_heads, int head_dim,
                                             double percentile = 0.9);

// Names for messages and flags.
std::string_view CodecKindName(CodecKind kind);
bool CpuHasAvx2();
bool CpuHasAvx512();

}  // namespace qaqkv

#endif  // QAQKV_KERNELS_CODEC_H_
