#include "kernels/internal/entropy_codec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/half.h"
#include "kernels/internal/rans.h"
#include "kernels/internal/rotation.h"

namespace qaqkv::internal {
namespace {

constexpr int kLanes = kEcLanes;
constexpr int kContexts = kEcContexts;
constexpr int64_t kMaxCode = 1 << 20;   // larger |q|: the group is stored exactly
constexpr uint8_t kFirstNonFinite = 0xf8;  // fp16 0x7c00 >> 7: Inf and NaN

#include "kernels/internal/ec_models.inc"

// The 16 models of each family, from the generated weights, normalized to
// rANS frequencies with integer arithmetic (every backend builds the same).
using ModelSet = std::array<std::array<RansTable, kContexts>, kEcFamilies>;
const ModelSet& Tables() {
  static const ModelSet tables = [] {
    ModelSet t;
    for (int f = 0; f < kEcFamilies; ++f)
      for (int k = 0; k < kContexts; ++k) {
        t[f][k] = *RansTable::FromCounts(kEcModelWeights[f][k]);  // every weight is positive
      }
    return t;
  }();
  return tables;
}

// -log2 of each token's probability under each model: what it costs.
using ModelBits = std::array<std::array<std::array<double, kEcTokens>, kContexts>, kEcFamilies>;
const ModelBits& TokenBits() {
  static const ModelBits bits = [] {
    ModelBits b;
    for (int f = 0; f < kEcFamilies; ++f)
      for (int k = 0; k < kContexts; ++k)
        for (int tok = 0; tok < kEcTokens; ++tok) {
          b[f][k][tok] = -std::log2(double(Tables()[f][k].freq(tok)) / kRansProbScale);
        }
    return b;
  }();
  return bits;
}

// What the tokens counted in hist[0, kEcTokens) cost under one model, added
// to `bits` token by token. A caller that sums several histograms passes its
// running sum rather than adding subtotals: that keeps one addition per token
// in a fixed order, so the rounding, and with it which model wins a near tie
// (the page's bytes), does not depend on how the sum is split.
double HistogramBits(const uint32_t* hist, int family, int context, double bits = 0) {
  const auto& cost = TokenBits()[family][context];
  for (int tok = 0; tok < kEcTokens; ++tok) {
    if (hist[tok] != 0) bits += hist[tok] * cost[tok];
  }
  return bits;
}

// The token of zigzag code u, and how many raw bits follow it.
void Tokenize(uint32_t u, uint16_t* token, int* raw_bits) {
  if (u < uint32_t{kEcDirect}) {
    *token = static_cast<uint16_t>(u);
    *raw_bits = 0;
    return;
  }
  const int n = 31 - __builtin_clz(u);  // >= 4
  *raw_bits = n - 1;
  *token = static_cast<uint16_t>(kEcDirect + 2 * (n - 4) + ((u >> (n - 1)) & 1));
}

float CodeValue(uint8_t code) { return EcCodeValue(code); }
uint8_t CodeDown(float x) {  // the largest code whose value is <= x (x >= 0)
  const uint16_t h = FloatToHalfDown(x);
  return static_cast<uint8_t>(std::min<uint32_t>(h >> 7, kFirstNonFinite - 1));
}


uint32_t Zigzag(int32_t q) { return q >= 0 ? uint32_t(q) << 1 : (uint32_t(-q) << 1) - 1; }
int32_t Unzigzag(uint32_t u) { return (u & 1) ? -int32_t((u + 1) >> 1) : int32_t(u >> 1); }

}  // namespace

// An fp16's top 8 bits (sign 0): the 8-bit codes of steps and spreads.
float EcCodeValue(uint8_t code) { return HalfToFloat(static_cast<uint16_t>(code) << 7); }

const uint32_t* EcDecodeEntries() {
  static const std::vector<uint32_t> entries = [] {
    std::vector<uint32_t> e(size_t(kEcFamilies) * kContexts * kRansProbScale);
    for (int f = 0; f < kEcFamilies; ++f)
      for (int k = 0; k < kContexts; ++k) {
        const RansTable& t = Tables()[f][k];
        uint32_t* row = e.data() + (size_t(f) * kContexts + k) * kRansProbScale;
        for (uint32_t slot = 0; slot < kRansProbScale; ++slot) {
          const int sym = t.SymbolAt(slot);
          row[slot] = t.freq(sym) | (slot - t.start(sym)) << 13 | uint32_t(sym) << 25;
        }
      }
    return e;
  }();
  return entries.data();
}

absl::Status EcCheckRawBitsEnd(std::span<const uint8_t> bits, uint64_t at) {
  const uint64_t size = uint64_t(bits.size()) * 8;
  if (at + 8 <= size || (at < size && ReadBits(bits, at, int(size - at)) != 0)) {
    return absl::DataLossError("page: entropy-coded section: raw bits left over");
  }
  return absl::OkStatus();
}

namespace {

bool CentreRowRef(const float* raw, const float* centre, int n, float* y) {
  bool finite = true;
  for (int d = 0; d < n; ++d) {
    finite &= std::isfinite(raw[d]);
    y[d] = raw[d] - centre[d];
  }
  return finite;
}

void RowRangeRef(const float* y, int n, float* amax, float* lo, float* hi) {
  float m = 0, l = y[0], h = y[0];
  for (int d = 0; d < n; ++d) {
    m = std::max(m, std::fabs(y[d]));
    l = std::min(l, y[d]);
    h = std::max(h, y[d]);
  }
  *amax = m;
  *lo = l;
  *hi = h;
}

void QuantizeRowRef(const float* y, int n, float step, uint8_t code, const uint8_t* spread,
                    uint16_t* tokens, uint8_t* contexts, BitWriter& raw) {
  for (int d = 0; d < n; ++d) {
    // Round half away from zero, as one IEEE division and one floor.
    const float r = y[d] / step;
    const int32_t q = static_cast<int32_t>(r >= 0 ? std::floor(r + 0.5f) : -std::floor(-r + 0.5f));
    const uint32_t u = Zigzag(q);
    contexts[d] = EcUnshiftedContext(spread[d], code);
    int raw_bits;
    Tokenize(u, &tokens[d], &raw_bits);
    if (raw_bits > 0) raw.Put(u & ((1u << raw_bits) - 1), raw_bits);
  }
}

// Step codes as tokens: per head, each group's code against the last
// nonzero code of that head (kEcFirstStep before the first), zigzagged; with
// zero-width groups in the section, token 0 is a zero-width group and the
// others are moved up by one. Exact groups have no token.
constexpr int kEcFirstStep = 64;

// The step tokens' raw bits go straight to enc.codes, which they open: the
// caller has written nothing there yet, and nothing else is written there
// before they end.
void EncodeSteps(const std::vector<uint8_t>& steps, const std::vector<uint8_t>& exact, int64_t H,
                 TensorEncoding& enc) {
  bool zeros = false;
  for (size_t g = 0; g < steps.size(); ++g) zeros |= !exact[g] && steps[g] == 0;
  std::vector<int> prev(H, kEcFirstStep);
  std::vector<uint16_t> tokens;
  for (size_t g = 0; g < steps.size(); ++g) {
    if (exact[g]) continue;
    int& p = prev[g % H];
    uint32_t u = 0;
    if (steps[g] != 0) {
      u = Zigzag(int(steps[g]) - p) + (zeros ? 1 : 0);
      p = steps[g];
    }
    uint16_t tok;
    int raw_bits;
    Tokenize(u, &tok, &raw_bits);
    tokens.push_back(tok);
    if (raw_bits > 0) enc.codes.Put(u & ((1u << raw_bits) - 1), raw_bits);
  }
  // The one model (of 3 families x 16) under which they cost the fewest bits.
  std::vector<uint32_t> hist(kEcTokens, 0);
  for (uint16_t t : tokens) ++hist[t];
  double best = -1;
  int model = 0;
  for (int m = 0; m < kEcFamilies * kContexts; ++m) {
    const double bits = HistogramBits(hist.data(), m / kContexts, m % kContexts);
    if (best < 0 || bits < best) {
      best = bits;
      model = m;
    }
  }
  enc.ec_step_model = static_cast<uint8_t>(model | (zeros ? kEcStepZeros : 0));
  const RansTable& table = Tables()[model / kContexts][model % kContexts];
  enc.ec_step_stream = *RansEncode(tokens, {}, std::span(&table, 1), 1);  // tokens fit every table
}

}  // namespace

absl::Status DecodeEcSteps(SectionView& v, std::span<const uint8_t> stream) {
  const int64_t H = v.geo.kv_heads, G = H * v.geo.tokens;
  const int model = v.ec_step_model & ~kEcStepZeros;
  const bool zeros = (v.ec_step_model & kEcStepZeros) != 0;
  if (model >= kEcFamilies * kContexts) {
    return absl::DataLossError(absl::StrCat("page: step model ", model, " of ", kEcFamilies * kContexts));
  }
  const RansTable& table = Tables()[model / kContexts][model % kContexts];
  RansDecoder rans;
  if (absl::Status st = rans.Start(stream, 1); !st.ok()) {
    return absl::DataLossError(absl::StrCat("page: step stream: ", st.message()));
  }
  v.ec_steps.assign(G, 0);
  std::vector<int> prev(H, kEcFirstStep);
  uint64_t bit = 0;
  int64_t next_exact = 0;
  for (int64_t g = 0; g < G; ++g) {
    if (next_exact < v.n_exact && GetU32(v.exact_groups.data() + next_exact * 4) == g) {
      ++next_exact;
      continue;
    }
    uint16_t tok;
    if (!rans.Next(table, &tok)) return absl::DataLossError("page: step stream: rans: stream ends early");
    uint32_t u = tok;
    if (u >= kEcDirect && !EcTokenValue(u, v.codes, bit, &u)) {
      return absl::DataLossError("page: step stream: raw bits end early");
    }
    if (zeros && u == 0) continue;  // a zero-width group
    const int64_t code = int64_t{prev[g % H]} + Unzigzag(u - (zeros ? 1 : 0));
    // Codes at or above 0xf8 would be fp16 Inf or NaN steps.
    if (code < 1 || code >= 0xf8) return absl::DataLossError(absl::StrCat("page: bad step code ", code));
    v.ec_steps[g] = static_cast<uint8_t>(code);
    prev[g % H] = static_cast<int>(code);
  }
  if (absl::Status st = rans.Finish(); !st.ok()) {
    return absl::DataLossError(absl::StrCat("page: step stream: ", st.message()));
  }
  // The values' raw bits start at the next byte; the padding is zeros.
  const uint64_t end = (bit + 7) / 8 * 8;
  if (end > bit && ReadBits(v.codes, bit, int(end - bit)) != 0) {
    return absl::DataLossError("page: step raw bits are not padded with zeros");
  }
  v.codes = v.codes.subspan(end / 8);
  return absl::OkStatus();
}

const EcRowKernels& EcReferenceKernels() {
  static constexpr EcRowKernels kernels{CentreRowRef, RowRangeRef, QuantizeRowRef,
                                        [](float* row, int n) { RotateRow(row, n, false); }};
  return kernels;
}

void EncodeTensorEntropy(TensorTask& task, const float* raw, TensorEncoding& enc,
                         const EcRowKernels& k) {
  const GroupGeometry& geo = task.geo;
  const int64_t H = geo.kv_heads, T = geo.tokens, D = geo.head_dim, G = H * T;
  const int n = static_cast<int>(D);
  task.channel_offset = ChannelCentres(raw, H, T, D);
  std::vector<float> centre(task.channel_offset.size());
  for (size_t i = 0; i < centre.size(); ++i) centre[i] = HalfToFloat(task.channel_offset[i]);
  // Centred (and rotated) rows. A row with a non-finite value is not used:
  // its group is exact, as is one whose codes would be too large (below).
  std::vector<float> y(size_t(G) * D);
  std::vector<uint8_t> exact(G, 0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < T; ++t) {
      float* row = y.data() + (h * T + t) * D;
      exact[t * H + h] = !k.centre_row(raw + (h * T + t) * D, centre.data() + h * D, n, row);
      if (task.rotate && !exact[t * H + h]) k.rotate_row(row, n);
    }
  // Steps.
  enc.ec_steps.assign(G, 0);
  int64_t coded = 0;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t t = g / H, h = g % H;
    if (exact[g]) continue;
    float e = task.group_e[g];
    if (e < 0) e = task.e_unobserved;
    float amax, lo, hi;
    k.row_range(y.data() + (h * T + t) * D, n, &amax, &lo, &hi);
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
    ++coded;
  }
  // Spreads: each channel's RMS over the coded groups, the models' context,
  // summed in double over the tokens in order.
  enc.ec_scales.assign(size_t(H) * D, 0);
  std::vector<double> ss(D);
  for (int64_t h = 0; h < H; ++h) {
    std::fill(ss.begin(), ss.end(), 0.0);
    int64_t rows = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (enc.ec_steps[t * H + h] == 0) continue;
      const float* row = y.data() + (h * T + t) * D;
      for (int64_t d = 0; d < D; ++d) ss[d] += double{row[d]} * double{row[d]};
      ++rows;
    }
    if (rows == 0) continue;
    for (int64_t d = 0; d < D; ++d) {
      enc.ec_scales[h * D + d] = CodeDown(static_cast<float>(std::sqrt(ss[d] / double(rows))));
    }
  }
  // The step codes, coded; their raw bits open `codes`, padded to a byte.
  EncodeSteps(enc.ec_steps, exact, H, enc);
  enc.codes.Put(0, static_cast<int>((8 - enc.codes.bit_size() % 8) % 8));
  // Tokens in group order (their raw bits into `codes`), then the rANS stream.
  std::vector<uint16_t> symbols(size_t(coded) * D);
  std::vector<uint8_t> contexts(symbols.size());
  size_t at = 0;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t t = g / H, h = g % H;
    if (exact[g]) {
      enc.exact_groups.push_back(static_cast<uint32_t>(g));
      for (int64_t d = 0; d < D; ++d) enc.exact_values.push_back(FloatToHalf(raw[(h * T + t) * D + d]));
      continue;
    }
    const uint8_t code = enc.ec_steps[g];
    if (code == 0) continue;
    k.quantize_row(y.data() + (h * T + t) * D, n, CodeValue(code), code, enc.ec_scales.data() + h * D,
                   symbols.data() + at, contexts.data() + at, enc.codes);
    at += D;
  }
  // The section's models: the family and shift under which its tokens cost
  // the fewest bits (the first family, then the smaller shift, on a tie),
  // from a histogram of unshifted contexts. Any choice decodes; this one is
  // the encoder's. (A shift per head gained nothing on tinylm-kv or
  // synthetic llama3-8b.)
  constexpr int kRaw = kContexts + 2 * kEcMaxShift;
  std::vector<uint32_t> hist(size_t(kRaw) * kEcTokens, 0);
  for (size_t i = 0; i < symbols.size(); ++i) ++hist[size_t(contexts[i]) * kEcTokens + symbols[i]];
  double best = -1;
  for (int family = 0; family < kEcFamilies; ++family)
    for (int shift = -kEcMaxShift; shift <= kEcMaxShift; ++shift) {
      double bits = 0;
      for (int r = 0; r < kRaw; ++r) {
        bits = HistogramBits(hist.data() + size_t(r) * kEcTokens, family,
                             std::clamp(r - kEcMaxShift + shift, 0, kContexts - 1), bits);
      }
      if (best < 0 || bits < best ||
          (bits == best && family == enc.ec_family && std::abs(shift) < std::abs(enc.ec_shift))) {
        best = bits;
        enc.ec_family = static_cast<uint8_t>(family);
        enc.ec_shift = static_cast<int8_t>(shift);
      }
    }
  for (uint8_t& c : contexts) {
    c = static_cast<uint8_t>(std::clamp(int(c) - kEcMaxShift + enc.ec_shift, 0, kContexts - 1));
  }
  enc.ec_stream = *RansEncode(symbols, contexts, Tables()[enc.ec_family], kLanes);  // tokens fit every table
}

absl::Status DecodeTensorEntropy(const SectionView& v, float* out) {
  const GroupGeometry& geo = v.geo;
  const int64_t H = geo.kv_heads, T = geo.tokens, D = geo.head_dim, G = H * T;
  const std::array<RansTable, kContexts>& tables = Tables()[v.ec_family];
  // Symbols are decoded as they are needed, so nothing here grows with the
  // page beyond one row; without `out` only the streams are checked.
  RansDecoder rans;
  if (absl::Status st = rans.Start(v.ec_stream, kLanes); !st.ok()) {
    return absl::DataLossError(absl::StrCat("page: entropy-coded section: ", st.message()));
  }
  uint64_t bit = 0;
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
        if (!rans.Next(tables[EcContext(v.ec_scales[h * D + d], code, v.ec_shift)], &sym)) {
          return absl::DataLossError("page: entropy-coded section: rans: stream ends early");
        }
        uint32_t u = sym;
        if (u >= kEcDirect && !EcTokenValue(u, v.codes, bit, &u)) {
          return absl::DataLossError("page: entropy-coded section: raw bits end early");
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
  // The raw bits are padded to a byte, with zeros.
  QAQKV_RETURN_IF_ERROR(EcCheckRawBitsEnd(v.codes, bit));
  return absl::OkStatus();
}

}  // namespace qaqkv::internal
