// Data sources of the quality evaluator: real KV caches read from tinylm-kv
// safetensors files (data/tinylm-kv/README.md) and synthetic KV caches with the
// structure of large LLaMA-family models (outlier key channels, RoPE, attention
// sinks, heavy-hitter tokens).
//
// Thread-safety: every function is pure apart from reading files; all may be
// called concurrently.
#ifndef QAQKV_TOOLS_EVAL_KV_SOURCE_H_
#define QAQKV_TOOLS_EVAL_KV_SOURCE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace qaqkv::eval {

// One layer of a KV sample, fp32, HND layout.
struct LayerKv {
  std::vector<float> k;  // [kv_heads][tokens][head_dim], keys after RoPE
  std::vector<float> v;  // [kv_heads][tokens][head_dim]
  // [q_heads][tokens][head_dim], queries after RoPE, NOT divided by
  // sqrt(head_dim). Query head h reads KV head h / (q_heads / kv_heads).
  std::vector<float> q;
};

struct KvSample {
  std::string name;  // file stem ("dev-00") or "synthetic:llama3-8b:seed=1"
  int num_layers = 0, kv_heads = 0, q_heads = 0, head_dim = 0, tokens = 0;
  std::vector<LayerKv> layers;  // num_layers entries
  // Token ids when known (tinylm-kv files carry their text and the model is
  // byte-level); empty otherwise.
  std::vector<int32_t> token_ids;
};

struct Geometry {
  std::string name;
  int num_layers, kv_heads, q_heads, head_dim;
};

// The presets: llama2-7b (32 layers, 32 kv heads, 32 q heads, head_dim 128),
// llama3-8b (32, 8, 32, 128), qwen2.5-7b (28, 4, 28, 128), tinylm (4, 1, 2, 64).
std::vector<Geometry> GeometryPresets();

// Returns the preset called `name`; kNotFound (listing the presets) otherwise.
absl::StatusOr<Geometry> FindGeometry(std::string_view name);

// Reads one tinylm-kv safetensors file: tensors layers.{L}.k and layers.{L}.v of
// shape [kv_heads, T, D] and layers.{L}.q of shape [q_heads, T, D], dtype F16
// (BF16 and F32 are accepted too), plus an optional `__metadata__` with
// num_layers, num_kv_heads, num_q_heads, head_dim and seq_len. Fields missing
// from the metadata are inferred from the shapes of layers.0.{k,q}, and the
// layer count from the consecutive layers.{L}.k tensors. Extra tensors are
// ignored. The sample is named after the file stem.
//
// Errors (each message names the file and the offending tensor or field):
//   kNotFound        the file does not exist;
//   kDataLoss        the file is truncated: shorter than the 8-byte header length,
//                    than the header it announces, or than the packed tensor data
//                    its header describes;
//   kInvalidArgument anything else malformed: header length over 100 MiB, header
//                    not a JSON object, bad metadata value, missing tensor, other
//                    dtype, shape that disagrees with the metadata or with layer 0,
//                    data_offsets whose length does not match shape and dtype,
//                    that overlap, or that point outside the data area of a
//                    non-packed layout;
//   kInternal        the file exists but cannot be read.
// Never reads out of bounds, whatever the input.
absl::StatusOr<KvSample> LoadSafetensorsFile(const std::string& path);

// A file, or every regular `*.safetensors` file of a directory (not recursive),
// in name order. Errors: those of LoadSafetensorsFile for the first bad file;
// kNotFound when `path` does not exist or a directory holds no such file.
absl::StatusOr<std::vector<KvSample>> LoadSafetensorsPath(const std::string& path);

struct SyntheticOptions {
  std::string geometry = "llama3-8b";  // a GeometryPresets() name
  int tokens = 1024;
  uint64_t seed = 1;
  // 0 = all layers of the geometry; otherwise the first max_layers (clamped to
  // the geometry). Layer L does not depend on max_layers.
  int max_layers = 0;
};

// Generates a synthetic sample with the structure of large LLaMA-family KV
// caches, per layer and KV head:
//   keys:    2-4 fixed outlier channels in low-frequency RoPE pairs, with
//            offsets of 12-16x a typical channel's standard deviation; RMS
//            growing from 1.3 (layer 0) to 2.3 (last layer);
//   RoPE:    on keys and queries, NeoX rotate_half, theta 500000 for llama3-*
//            and 10000 otherwise;
//   queries: a per-head mean direction (shared mostly within a GQA group) plus
//            isotropic noise, scaled so that the logits' spread over keys is ~1.2;
//   sinks:   in ~90% of KV heads token 0's key aligns with the mean query
//            direction (logit 4.5-6.5 above typical); in the rest weakly;
//   hitters: ~1.5% of the tokens (shared by the heads of a layer) align too
//            (logit 2-3 above typical);
//   values:  Gaussian, RMS ~1, mildly varying channel scales, one 4x channel
//            per head in layer 0, and a 10x smaller value at token 0.
// The same options give the same sample on every run, bit for bit; other
// platforms agree up to last-bit differences of their std::exp/log/cos.
// Errors: kNotFound for an unknown geometry; kInvalidArgument for tokens < 1,
// max_layers < 0 or a sample of more than 2^31 floats.
absl::StatusOr<KvSample> GenerateSynthetic(const SyntheticOptions& opts);

}  // namespace qaqkv::eval

#endif  // QAQKV_TOOLS_EVAL_KV_SOURCE_H_
