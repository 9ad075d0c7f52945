// The synthetic KV generator of the evaluator: LLaMA-shaped caches (outlier
// key channels, RoPE, attention sinks, heavy-hitter tokens) for any geometry
// preset and length, the same bytes on every machine (a ziggurat of our own,
// no std::normal_distribution, and -ffp-contract=off).
#include <algorithm>
#include <array>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "tools/eval/kv_source.h"

namespace qaqkv::eval {
namespace {

constexpr uint64_t kMaxSyntheticFloats = uint64_t{1} << 31;

}  // namespace

namespace {

// Marsaglia-Tsang ziggurat with 256 strips (Doornik's ZIGNOR constants).
// std::normal_distribution differs between standard libraries, and Box-Muller
// costs a log and a sincos per pair, too slow for the ~200 M draws of a full
// llama3-8b sample. Each 64-bit draw yields two normals of float precision.
class Ziggurat {
 public:
  Ziggurat() {
    double x[257];
    x[0] = kV / std::exp(-0.5 * kR * kR);
    x[1] = kR;
    for (int i = 2; i < 256; ++i) {
      x[i] = std::sqrt(-2.0 *
                       std::log(kV / x[i - 1] + std::exp(-0.5 * x[i - 1] * x[i - 1])));
    }
    x[256] = 0.0;
    for (int i = 0; i <= 256; ++i) {
      x_[i] = x[i];
      f_[i] = std::exp(-0.5 * x[i] * x[i]);
      scaled_[i] = static_cast<float>(x[i] * 0x1p-31);
      inner_[i] = static_cast<float>(x[i]);
    }
  }

  // One normal from the 32 bits `w`: bits 0-7 pick the strip, bits 8-31 read
  // as a signed number are the position in it.
  float Normal(uint32_t w, std::mt19937_64& rng) const {
    const int i = static_cast<int>(w & 0xff);
    const float x =
        static_cast<float>(static_cast<int32_t>(w & 0xffffff00u)) * scaled_[i];
    if (std::fabs(x) < inner_[i + 1]) return x;
    return Rejected(w, rng);
  }

  static double Open01(std::mt19937_64& rng) {
    return (static_cast<double>(rng() >> 11) + 0.5) * 0x1p-53;
  }

 private:
  // The ~1% of draws outside the strip's inner rectangle, which may need
  // more draws from `rng`.
  [[gnu::noinline]] float Rejected(uint32_t w, std::mt19937_64& rng) const {
    for (;;) {
      const int i = static_cast<int>(w & 0xff);
      const double u = static_cast<int32_t>(w & 0xffffff00u) * 0x1p-31;
      const double x = u * x_[i];
      if (std::fabs(x) < x_[i + 1]) return static_cast<float>(x);
      if (i == 0) {  // the tail beyond kR
        double a, b;
        do {
          a = -std::log(Open01(rng)) / kR;
          b = -std::log(Open01(rng));
        } while (b + b < a * a);
        return static_cast<float>(u < 0 ? -(kR + a) : kR + a);
      }
      if (f_[i] + Open01(rng) * (f_[i + 1] - f_[i]) < std::exp(-0.5 * x * x)) {
        return static_cast<float>(x);
      }
      w = static_cast<uint32_t>(rng());
    }
  }

  static constexpr double kR = 3.6541528853610088;
  static constexpr double kV = 0.00492867323399;
  std::array<double, 257> x_;
  std::array<double, 257> f_;
  // The fast path in float: x_ * 2^-31 and x_.
  std::array<float, 257> scaled_;
  std::array<float, 257> inner_;
};

class Rng {
 public:
  Rng(uint64_t seed, const Ziggurat& zig) : eng_(seed), zig_(zig) {}
  // Fills out[0, n) with standard normals.
  void Normals(float* out, int n) {
    int i = 0;
    for (; i + 1 < n; i += 2) {
      const uint64_t r = eng_();
      out[i] = zig_.Normal(static_cast<uint32_t>(r), eng_);
      out[i + 1] = zig_.Normal(static_cast<uint32_t>(r >> 32), eng_);
    }
    if (i < n) out[i] = zig_.Normal(static_cast<uint32_t>(eng_()), eng_);
  }
  float Normal() {
    float x;
    Normals(&x, 1);
    return x;
  }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Ziggurat::Open01(eng_); }
  int Below(int n) {
    return std::min(n - 1, static_cast<int>(Ziggurat::Open01(eng_) * n));
  }

 private:
  std::mt19937_64 eng_;
  const Ziggurat& zig_;
};

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// NeoX rotate_half: channel i turns with channel i + D/2 at angle pos * inv_freq[i].
struct Rope {
  int half;
  std::vector<float> cos, sin;  // [tokens][half]

  Rope(int tokens, int head_dim, double theta) : half(head_dim / 2) {
    cos.resize(static_cast<size_t>(tokens) * half);
    sin.resize(cos.size());
    for (int t = 0; t < tokens; ++t) {
      for (int i = 0; i < half; ++i) {
        const double angle = t * std::pow(theta, -2.0 * i / head_dim);
        cos[static_cast<size_t>(t) * half + i] = static_cast<float>(std::cos(angle));
        sin[static_cast<size_t>(t) * half + i] = static_cast<float>(std::sin(angle));
      }
    }
  }

  // Rotates pairs [lo, hi) of `x` in place for position t.
  void Apply(int t, int lo, int hi, float* x) const {
    const float* c = &cos[static_cast<size_t>(t) * half];
    const float* s = &sin[static_cast<size_t>(t) * half];
    for (int i = lo; i < hi; ++i) {
      const float a = x[i], b = x[i + half];
      x[i] = a * c[i] - b * s[i];
      x[i + half] = b * c[i] + a * s[i];
    }
  }
};

// A random unit vector supported on the RoPE pairs [lo, half) (both channels of
// each pair), plus `base` when given.
std::vector<float> LowFreqDirection(Rng& rng, int head_dim, int lo, const float* base,
                                    float noise) {
  const int half = head_dim / 2;
  std::vector<float> u(head_dim, 0.0f);
  double norm2 = 0;
  for (int i = lo; i < half; ++i) {
    for (int c : {i, i + half}) {
      u[c] = (base != nullptr ? base[c] : 0.0f) + noise * rng.Normal();
      norm2 += double{u[c]} * u[c];
    }
  }
  const float inv = static_cast<float>(1.0 / std::sqrt(std::max(norm2, 1e-30)));
  for (float& x : u) x *= inv;
  return u;
}

void GenerateLayer(const Geometry& g, int tokens, uint64_t seed, int l, const Rope& rope,
                   const Ziggurat& zig, LayerKv& out) {
  Rng rng(SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(l) + 1)), zig);
  const int d = g.head_dim, half = d / 2, group = g.q_heads / g.kv_heads;
  // The mean query direction and the sink/heavy-hitter alignment live in the
  // lowest-frequency eighth of the RoPE pairs, where the relative rotation
  // over the context is small: that is how real models keep a sink attractive
  // from every position. Outliers sit in the eighth below, as the pre-RoPE
  // key outliers of LLaMA-family models do in low-frequency channels.
  const int low = half - std::max(1, half / 8);
  const int out_lo = std::min(low, half * 3 / 4);
  const float sqrt_d = std::sqrt(static_cast<float>(d));
  const float support = static_cast<float>(2 * (half - low));
  // Key RMS grows with depth, as in real models (tinylm-kv: 1.1 to 2.4).
  const float key_rms =
      1.3f + 1.0f * static_cast<float>(l) / std::max(1, g.num_layers - 1);
  const size_t kv_size = static_cast<size_t>(g.kv_heads) * tokens * d;
  out.k.resize(kv_size);
  out.v.resize(kv_size);
  out.q.resize(static_cast<size_t>(g.q_heads) * tokens * d);

  // Heavy hitters are properties of tokens, so all heads of a layer share them.
  std::vector<float> hitter(tokens, 0.0f);
  const int num_hitters = tokens > 1 ? std::max(1, (tokens * 3 + 100) / 200) : 0;
  for (int i = 0; i < num_hitters; ++i) {
    hitter[1 + rng.Below(tokens - 1)] = static_cast<float>(rng.Uniform(2.0, 3.0));
  }

  std::vector<float> k_scale(d), k_offset(d), v_scale(d), pre(d);
  for (int h = 0; h < g.kv_heads; ++h) {
    // Channel scales and outlier offsets in units of a typical channel first;
    // `sigma` then sets the key RMS.
    for (int c = 0; c < d; ++c) {
      k_scale[c] = std::exp(0.2f * rng.Normal());
      k_offset[c] = 0.0f;
    }
    const std::vector<float> u = LowFreqDirection(rng, d, low, nullptr, 1.0f);
    std::vector<int> pairs;
    for (int i = out_lo; i < low; ++i) pairs.push_back(i);
    const int num_outliers = std::min<int>(2 + rng.Below(3), pairs.size());
    for (int j = 0; j < num_outliers; ++j) {
      std::swap(pairs[j], pairs[j + rng.Below(static_cast<int>(pairs.size()) - j)]);
      const int c = pairs[j] + (rng.Below(2) == 1 ? half : 0);
      k_offset[c] =
          static_cast<float>((rng.Below(2) == 1 ? 1 : -1) * rng.Uniform(7, 10));
      k_scale[c] = 2.0f;
    }
    double mean_square = 0;
    for (int c = 0; c < d; ++c) {
      mean_square += k_scale[c] * k_scale[c] + k_offset[c] * k_offset[c];
    }
    const float sigma = key_rms / static_cast<float>(std::sqrt(mean_square / d));
    for (int c = 0; c < d; ++c) {
      k_scale[c] *= sigma;
      k_offset[c] *= sigma;
    }
    // Query noise sigma_q = 1 / sigma makes the logit noise over keys about
    // sqrt(1 + 0.7^2) ~ 1.2 whatever the head's scale: softmax neither flat nor
    // one-hot.
    const float q_sigma = 1.0f / sigma;
    const float q_mean_norm = 0.7f * sqrt_d * q_sigma;
    // Most heads have a sink whose logit is 4.5-6.5; the rest a weak one.
    const double sink_logit =
        rng.Uniform(0, 1) < 0.9 ? rng.Uniform(4.5, 6.5) : rng.Uniform(0.5, 2.0);
    const float logit_to_coef = sqrt_d / q_mean_norm;

    for (int t = 0; t < tokens; ++t) {
      const float noise = t == 0 ? 0.3f : 1.0f;
      const float align = t == 0 ? static_cast<float>(sink_logit) * logit_to_coef
                                 : hitter[t] * logit_to_coef;
      rng.Normals(pre.data(), d);
      for (int c = 0; c < d; ++c) {
        pre[c] = k_offset[c] + noise * k_scale[c] * pre[c] + align * u[c];
      }
      rope.Apply(t, 0, half, pre.data());
      std::copy(pre.begin(), pre.end(),
                out.k.begin() + (static_cast<size_t>(h) * tokens + t) * d);
    }

    double v_norm2 = 0;
    for (int c = 0; c < d; ++c) {
      v_scale[c] = std::exp(0.25f * rng.Normal());
      v_norm2 += double{v_scale[c]} * v_scale[c];
    }
    const float v_norm = static_cast<float>(std::sqrt(d / v_norm2));
    for (float& s : v_scale) s *= v_norm;
    if (l == 0) v_scale[rng.Below(d)] *= 4.0f;
    // Values of real models share a per-head mean direction (the output of
    // attention is not an average of independent noise); without it every
    // codec's relative output error is inflated several times.
    std::vector<float> v_mean(d);
    rng.Normals(v_mean.data(), d);
    float* v = &out.v[static_cast<size_t>(h) * tokens * d];
    for (int t = 0; t < tokens; ++t) {
      float* row = v + static_cast<size_t>(t) * d;
      rng.Normals(row, d);
      const float sink_scale = t == 0 ? 0.1f : 1.0f;
      // Mean and noise of unit variance each: divide by sqrt(2) to keep RMS ~1.
      for (int c = 0; c < d; ++c) {
        row[c] = sink_scale * v_scale[c] * (row[c] + v_mean[c]) * 0.70710678f;
      }
    }

    for (int qh = h * group; qh < (h + 1) * group; ++qh) {
      // Heads of a group share most of the KV head's direction (|u - uq| ~ 0.3).
      const std::vector<float> uq =
          LowFreqDirection(rng, d, low, u.data(), 0.3f / std::sqrt(support));
      float* q = &out.q[static_cast<size_t>(qh) * tokens * d];
      for (int t = 0; t < tokens; ++t) {
        // Isotropic noise is invariant under rotation, so only the mean part
        // needs RoPE.
        float* row = q + static_cast<size_t>(t) * d;
        const float norm = q_mean_norm * std::exp(0.15f * rng.Normal());
        for (int c = 0; c < d; ++c) pre[c] = norm * uq[c];
        rope.Apply(t, low, half, pre.data());
        rng.Normals(row, d);
        for (int c = 0; c < d; ++c) row[c] = pre[c] + q_sigma * row[c];
      }
    }
  }
}

}  // namespace

absl::StatusOr<KvSample> GenerateSynthetic(const SyntheticOptions& opts) {
  QAQKV_ASSIGN_OR_RETURN(const Geometry g, FindGeometry(opts.geometry));
  if (opts.tokens < 1 || opts.max_layers < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "synthetic: need tokens >= 1 and max_layers >= 0, got tokens=", opts.tokens,
        " max_layers=", opts.max_layers));
  }
  KvSample s;
  s.name = absl::StrCat("synthetic:", g.name, ":seed=", opts.seed);
  s.num_layers =
      opts.max_layers == 0 ? g.num_layers : std::min(opts.max_layers, g.num_layers);
  s.kv_heads = g.kv_heads;
  s.q_heads = g.q_heads;
  s.head_dim = g.head_dim;
  s.tokens = opts.tokens;
  const uint64_t floats = static_cast<uint64_t>(s.num_layers) *
                          (2 * s.kv_heads + s.q_heads) * static_cast<uint64_t>(s.tokens) *
                          s.head_dim;
  if (floats > kMaxSyntheticFloats) {
    return absl::InvalidArgumentError(
        absl::StrCat("synthetic: ", floats, " floats requested, limit is 2^31"));
  }
  const bool llama3 = g.name.starts_with("llama3");
  const Rope rope(s.tokens, s.head_dim, llama3 ? 500000.0 : 10000.0);
  static const Ziggurat zig;  // trivially destructible tables
  s.layers.resize(s.num_layers);
  for (int l = 0; l < s.num_layers; ++l) {
    GenerateLayer(g, s.tokens, opts.seed, l, rope, zig, s.layers[l]);
  }
  return s;
}

}  // namespace qaqkv::eval
