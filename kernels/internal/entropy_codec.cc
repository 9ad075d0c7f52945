#include "kernels/internal/entropy_codec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/half.h"
#include "kernels/internal/rans.h"
#include "kernels/internal/rotation.h"

namespace qaqkv::internal {
namespace {

constexpr int kLanes = 8;
constexpr int kContexts = 16;
constexpr int kDirect = 32;             // zigzag codes 0..31 are symbols
constexpr int kEscape = kDirect;        // symbol 32: the code is >= 32
constexpr int64_t kMaxCode = 1 << 20;   // larger |q|: the group is stored exactly
constexpr uint8_t kFirstNonFinite = 0xf8;  // fp16 0x7c00 >> 7: Inf and NaN

// theta_k * 2^24 of the two-sided geometric model of context k, whose
// standard deviation in steps is 2^((k - 2.5) / 2): exp(-sqrt(2) / that).
// Fixed forever for format version 2.
constexpr uint32_t kTheta[kContexts] = {
    580675,   1555205,  3121236,  5108034,  7236411,  9257354,  11018477, 12462448,
    13596300, 14459778, 15103247, 15575456, 15918242, 16165172, 16342086, 16468351};

// The 16 tables, built once with integer arithmetic only.
const std::array<RansTable, kContexts>& Tables() {
  static const std::array<RansTable, kContexts> tables = [] {
    std::array<RansTable, kContexts> t;
    for (int k = 0; k < kContexts; ++k) {
      // p[n] = theta^n in 2^24 fixed point.
      uint64_t p[kDirect / 2 + 2];
      p[0] = uint64_t{1} << 24;
      for (int n = 1; n < kDirect / 2 + 2; ++n) p[n] = (p[n - 1] * kTheta[k]) >> 24;
      std::vector<uint32_t> counts(kDirect + 1);
      for (int u = 0; u < kDirect; ++u) counts[u] = static_cast<uint32_t>(p[(u + 1) / 2]);
      // Zigzag codes 32, 33, 34, ... have weights theta^16, theta^17, theta^17, ...
      const uint64_t tail = p[kDirect / 2] + 2 * p[kDirect / 2 + 1] * (uint64_t{1} << 24) /
                                                 ((uint64_t{1} << 24) - kTheta[k]);
      counts[kEscape] = static_cast<uint32_t>(std::min<uint64_t>(tail, uint64_t{1} << 24));
      t[k] = *RansTable::FromCounts(counts);  // never fails: counts[0] > 0
    }
    return t;
  }();
  return tables;
}

// An fp16's top 8 bits (sign 0): the 8-bit codes of steps and spreads.
float CodeValue(uint8_t code) { return HalfToFloat(static_cast<uint16_t>(code) << 7); }
uint8_t CodeDown(float x) {  // the largest code whose value is <= x (x >= 0)
  const uint16_t h = FloatToHalfDown(x);
  return static_cast<uint8_t>(std::min<uint32_t>(h >> 7, kFirstNonFinite - 1));
}

// Context of a value: its channel's spread against its group's step, in
// half octaves (the codes are 8 per octave).
uint8_t Context(uint8_t spread, uint8_t step) {
  const int k = (int(spread) - int(step)) / 4 + 3;
  return static_cast<uint8_t>(std::clamp(k, 0, kContexts - 1));
}

uint32_t Zigzag(int32_t q) { return q >= 0 ? uint32_t(q) << 1 : (uint32_t(-q) << 1) - 1; }
int32_t Unzigzag(uint32_t u) { return (u & 1) ? -int32_t((u + 1) >> 1) : int32_t(u >> 1); }

// Elias gamma of n >= 1: floor(log2 n) zeros, then n's bits from the top.
void PutGamma(BitWriter& w, uint32_t n) {
  const int len = 32 - __builtin_clz(n);
  w.Put(0, len - 1);
  for (int b = len - 1; b >= 0; --b) w.Put((n >> b) & 1, 1);
}

}  // namespace

void EncodeTensorEntropy(TensorTask& task, const float* raw, TensorEncoding& enc) {
  const GroupGeometry& geo = task.geo;
  const int64_t H = geo.kv_heads, T = geo.tokens, D = geo.head_dim, G = H * T;
  task.channel_offset = ChannelCentres(raw, H, T, D);
  std::vector<float> centre(task.channel_offset.size());
  for (size_t i = 0; i < centre.size(); ++i) centre[i] = HalfToFloat(task.channel_offset[i]);
  // Centred (and rotated) rows. A row with a non-finite value stays as it
  // is: its group is exact, as is one whose codes would be too large (below).
  std::vector<float> y(size_t(G) * D);
  std::vector<uint8_t> exact(G, 0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < T; ++t) {
      float* row = y.data() + (h * T + t) * D;
      for (int64_t d = 0; d < D; ++d) {
        const float a = raw[(h * T + t) * D + d];
        exact[t * H + h] |= !std::isfinite(a);
        row[d] = a - centre[h * D + d];
      }
      if (task.rotate && !exact[t * H + h]) RotateRow(row, static_cast<int>(D), false);
    }
  // Steps.
  enc.ec_steps.assign(G, 0);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t t = g / H, h = g % H;
    const float* row = y.data() + (h * T + t) * D;
    if (exact[g]) continue;
    float e = task.group_e[g];
    if (e < 0) e = task.e_unobserved;
    float amax = 0, lo = row[0], hi = row[0];
    for (int64_t d = 0; d < D; ++d) {
      amax = std::max(amax, std::fabs(row[d]));
      lo = std::min(lo, row[d]);
      hi = std::max(hi, row[d]);
    }
    // b_min: at least the precision of a b_min-bit min-max group.
    if (task.b_min > 0 && hi > lo) e = std::min(e, std::ldexp(hi - lo, -task.b_min));
    if (!(e < __builtin_inff())) continue;  // no bound at all: zero width
    uint8_t code = std::max<uint8_t>(1, CodeDown(e));
    const float step = CodeValue(code);
    if (amax <= 0.5f * step) continue;  // every value within half a step of 0
    if (amax / step > static_cast<float>(kMaxCode)) {
      exact[g] = 1;
      continue;
    }
    enc.ec_steps[g] = code;
  }
  // Spreads: each channel's RMS over the coded groups, the models' context.
  enc.ec_scales.assign(size_t(H) * D, 0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < D; ++d) {
      double ss = 0;
      int64_t n = 0;
      for (int64_t t = 0; t < T; ++t) {
        if (enc.ec_steps[t * H + h] == 0) continue;
        const double a = y[(h * T + t) * D + d];
        ss += a * a;
        ++n;
      }
      enc.ec_scales[h * D + d] = n > 0 ? CodeDown(static_cast<float>(std::sqrt(ss / n))) : 0;
    }
  // Symbols, in group order, then the rANS stream and the escapes.
  std::vector<uint16_t> symbols;
  std::vector<uint8_t> contexts;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t t = g / H, h = g % H;
    if (exact[g]) {
      enc.exact_groups.push_back(static_cast<uint32_t>(g));
      for (int64_t d = 0; d < D; ++d) enc.exact_values.push_back(FloatToHalf(raw[(h * T + t) * D + d]));
      continue;
    }
    const uint8_t code = enc.ec_steps[g];
    if (code == 0) continue;
    const float step = CodeValue(code);
    const float* row = y.data() + (h * T + t) * D;
    for (int64_t d = 0; d < D; ++d) {
      // Round half away from zero, as one IEEE division and one floor.
      const float r = row[d] / step;
      const int32_t q = static_cast<int32_t>(r >= 0 ? std::floor(r + 0.5f) : -std::floor(-r + 0.5f));
      const uint32_t u = Zigzag(q);
      contexts.push_back(Context(enc.ec_scales[h * D + d], code));
      if (u < kDirect) {
        symbols.push_back(static_cast<uint16_t>(u));
      } else {
        symbols.push_back(kEscape);
        PutGamma(enc.codes, u - kDirect + 1);
      }
    }
  }
  enc.ec_stream = *RansEncode(symbols, contexts, Tables(), kLanes);  // symbols fit the tables
}

absl::Status DecodeTensorEntropy(const SectionView& v, float* out) {
  const GroupGeometry& geo = v.geo;
  const int64_t H = geo.kv_heads, T = geo.tokens, D = geo.head_dim, G = H * T;
  const std::array<RansTable, kContexts>& tables = Tables();
  // Symbols are decoded as they are needed, so nothing here grows with the
  // page beyond one row; without `out` only the streams are checked.
  RansDecoder rans;
  if (absl::Status st = rans.Start(v.ec_stream, kLanes); !st.ok()) {
    return absl::DataLossError(absl::StrCat("page: entropy-coded section: ", st.message()));
  }
  uint64_t bit = 0;
  const uint64_t escape_bits = uint64_t(v.codes.size()) * 8;
  int64_t next_exact = 0, exact_at = 0;
  std::vector<float> row(D);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t t = g / H, h = g % H;
    float* dst = out == nullptr ? nullptr : out + (h * T + t) * D;
    if (next_exact < v.n_exact && GetU32(v.exact_groups.data() + next_exact * 4) == g) {
      ++next_exact;
      for (int64_t d = 0; d < D; ++d, ++exact_at) {
        if (dst != nullptr) dst[d] = HalfToFloat(GetU16(v.exact_values.data() + exact_at * 2));
      }
      continue;
    }
    const uint8_t code = v.ec_steps[g];
    if (code == 0) {
      if (dst == nullptr) continue;
      std::fill(row.begin(), row.end(), 0.0f);
    } else {
      const float step = CodeValue(code);
      for (int64_t d = 0; d < D; ++d) {
        uint16_t sym;
        if (!rans.Next(tables[Context(v.ec_scales[h * D + d], code)], &sym)) {
          return absl::DataLossError("page: entropy-coded section: rans: stream ends early");
        }
        uint32_t u = sym;
        if (u == kEscape) {
          int zeros = 0;
          while (true) {
            if (bit >= escape_bits) return absl::DataLossError("page: escape bits end early");
            if (ReadBits(v.codes, bit++, 1)) break;
            if (++zeros > 21) return absl::DataLossError("page: escape code too long");
          }
          if (bit + zeros > escape_bits) return absl::DataLossError("page: escape bits end early");
          uint32_t n = 1;
          for (int b = 0; b < zeros; ++b) n = (n << 1) | static_cast<uint32_t>(ReadBits(v.codes, bit++, 1));
          u = n - 1 + kDirect;
        }
        row[d] = static_cast<float>(Unzigzag(u)) * step;
      }
      if (dst == nullptr) continue;
    }
    if (v.rotate) RotateRow(row.data(), static_cast<int>(D), true);
    for (int64_t d = 0; d < D; ++d) {
      dst[d] = row[d] + HalfToFloat(GetU16(v.channel_offset.data() + (h * D + d) * 2));
    }
  }
  if (absl::Status st = rans.Finish(); !st.ok()) {
    return absl::DataLossError(absl::StrCat("page: entropy-coded section: ", st.message()));
  }
  // The escape stream is padded to a byte, with zeros.
  if (bit + 8 <= escape_bits ||
      (bit < escape_bits && ReadBits(v.codes, bit, int(escape_bits - bit)) != 0)) {
    return absl::DataLossError("page: escape bits left over");
  }
  return absl::OkStatus();
}

}  // namespace qaqkv::internal
