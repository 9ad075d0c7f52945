#include "kernels/internal/reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/internal/rotation.h"

namespace qaqkv::internal {

std::vector<int> SelectOutliers(std::span<const float> values, int k) {
  if (k == 0) return {};
  const int n = static_cast<int>(values.size());
  // The k smallest (ascending value, lower index first on ties), then the k
  // largest of the rest (descending value, lower index first on ties): both
  // orders are total on finite values, so partial sorts pick exactly the
  // sets full stable sorts would, in O(n log k).
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    return values[a] < values[b] || (values[a] == values[b] && a < b);
  });
  std::partial_sort(order.begin() + k, order.begin() + 2 * k, order.end(), [&](int a, int b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  std::vector<int> out(order.begin(), order.begin() + 2 * k);
  std::sort(out.begin(), out.end());
  return out;
}

void EncodeTensorReference(const TensorTask& task, const float* x, const float* raw,
                           TensorEncoding& enc) {
  const GroupGeometry& geo = task.geo;
  const int64_t G = geo.groups();
  std::vector<float> vals, raws;
  std::vector<int64_t> where;
  enc.widths.assign(G, 0);
  for (int64_t g = 0; g < G; ++g) {
    const int n = geo.GroupSize(g);
    vals.resize(n);
    raws.resize(n);
    where.resize(n);
    bool finite = true;
    geo.ForEachIndex(g, [&](int i, int64_t idx) {
      vals[i] = x[idx];
      raws[i] = raw[idx];
      where[i] = idx;
      finite = finite && std::isfinite(raw[idx]) && std::isfinite(x[idx]);
    });
    GroupParams p;
    std::vector<int> outl;
    if (finite) {
      outl = SelectOutliers(vals, task.outliers);
      float lo = 0, hi = 0;
      bool any = false;
      for (int i = 0, o = 0; i < n; ++i) {
        if (o < static_cast<int>(outl.size()) && outl[o] == i) { ++o; continue; }
        lo = any ? std::min(lo, vals[i]) : vals[i];
        hi = any ? std::max(hi, vals[i]) : vals[i];
        any = true;
      }
      int bits = task.fixed_bits;
      if (task.variable_widths) {
        const float e = task.group_e[g];
        const float range = hi - HalfToFloat(FloatToHalfDown(lo));
        bits = e < 0 ? task.b_max : BitWidthFor(range, e, task.b_min, task.b_max);
      }
      p = MakeGroupParams(lo, hi, bits);
    } else {
      p.bits = kExactWidth;
    }
    if (p.bits == kExactWidth) {
      enc.exact_groups.push_back(static_cast<uint32_t>(g));
      for (int i = 0; i < n; ++i) enc.exact_values.push_back(FloatToHalf(raws[i]));
      continue;
    }
    enc.widths[g] = static_cast<uint8_t>(p.bits);
    enc.lo.push_back(p.lo);
    enc.step.push_back(p.step);
    // Outliers are exact input values, or exact rotated values of a rotated
    // row (the decoder rotates the whole row back).
    for (int i : outl) enc.outlier_values.push_back(FloatToHalf(task.rotate ? vals[i] : raws[i]));
    for (int i : outl) enc.outlier_index.push_back(static_cast<uint16_t>(i));
    const float lo = HalfToFloat(p.lo), inv = InverseStep(HalfToFloat(p.step));
    for (int i = 0, o = 0; i < n; ++i) {
      if (o < static_cast<int>(outl.size()) && outl[o] == i) { ++o; continue; }
      if (p.bits > 0) enc.codes.Put(QuantizeValue(vals[i], lo, inv, p.bits), p.bits);
    }
  }
  // kivi: the newest tokens stay fp16.
  const int64_t D = geo.head_dim, T = geo.tokens;
  for (int64_t h = 0; h < geo.kv_heads; ++h)
    for (int64_t t = geo.quant_tokens; t < T; ++t)
      for (int64_t d = 0; d < D; ++d) enc.residual.push_back(FloatToHalf(raw[(h * T + t) * D + d]));
}

void UnrotateQuantizedRows(const SectionView& v, float* out,
                           void (*rotate_back)(float* row, int head_dim)) {
  const GroupGeometry& geo = v.geo;
  const int64_t D = geo.head_dim, T = geo.tokens, H = geo.kv_heads;
  const int64_t G = geo.groups();
  // Every row of a quantized group back from the rotation, then its key
  // centres added (channel scales never come with a rotation).
  int64_t next_exact = 0;
  for (int64_t g = 0; g < G; ++g) {
    if (next_exact < v.n_exact && GetU32(v.exact_groups.data() + next_exact * 4) == g) {
      ++next_exact;
      continue;
    }
    // Head-level groups are one row; layer-level groups one row per head.
    const int64_t t = geo.kind == GroupGeometry::Kind::kLayer ? g : g / H;
    const int64_t h0 = geo.kind == GroupGeometry::Kind::kLayer ? 0 : g % H;
    const int64_t h1 = geo.kind == GroupGeometry::Kind::kLayer ? H : h0 + 1;
    for (int64_t h = h0; h < h1; ++h) {
      float* row = out + (h * T + t) * D;
      rotate_back(row, static_cast<int>(D));
      if (!v.channel_offset.empty()) {
        for (int64_t d = 0; d < D; ++d) row[d] += HalfToFloat(GetU16(v.channel_offset.data() + (h * D + d) * 2));
      }
    }
  }
}

void DecodeTensorReference(const SectionView& v, float* out) {
  const GroupGeometry& geo = v.geo;
  const int64_t D = geo.head_dim, T = geo.tokens, H = geo.kv_heads;
  auto u16 = [](std::span<const uint8_t> s, int64_t i) { return GetU16(s.data() + i * 2); };
  const int64_t G = geo.groups();
  const bool has_transform = !v.channel_scale.empty() || !v.channel_offset.empty();
  int64_t next_exact = 0, q = 0, exact_at = 0;
  uint64_t bitpos = 0;
  for (int64_t g = 0; g < G; ++g) {
    if (next_exact < v.n_exact && GetU32(v.exact_groups.data() + next_exact * 4) == g) {
      ++next_exact;
      geo.ForEachIndex(g, [&](int, int64_t idx) { out[idx] = HalfToFloat(u16(v.exact_values, exact_at++)); });
      continue;
    }
    const int w = v.Width(g);
    const float lo = HalfToFloat(u16(v.lo, q)), step = HalfToFloat(u16(v.step, q));
    const int64_t obase = q * 2 * v.outliers;
    int o = 0;
    geo.ForEachIndex(g, [&](int i, int64_t idx) {
      if (o < 2 * v.outliers) {
        const int oi = v.index_bytes == 1 ? v.outlier_index[obase + o]
                                          : GetU16(v.outlier_index.data() + (obase + o) * 2);
        if (oi == i) {
          out[idx] = HalfToFloat(u16(v.outlier_values, obase + o));
          ++o;
          return;
        }
      }
      uint32_t code = 0;
      if (w > 0) {
        code = static_cast<uint32_t>(ReadBits(v.codes, bitpos, w));
        bitpos += w;
      }
      float r = DequantizeValue(code, lo, step);
      if (v.rotate) {  // still rotated: the pass below turns it back
        out[idx] = r;
        return;
      }
      if (has_transform) {  // two divisions a value: only when there is a transform
        const int64_t channel = idx / (T * D) * D + idx % D;
        if (!v.channel_scale.empty()) r *= HalfToFloat(GetU16(v.channel_scale.data() + channel * 2));
        if (!v.channel_offset.empty()) r += HalfToFloat(GetU16(v.channel_offset.data() + channel * 2));
      }
      out[idx] = r;
    });
    ++q;
  }
  if (v.rotate) {
    UnrotateQuantizedRows(v, out, [](float* row, int head_dim) { RotateRow(row, head_dim, true); });
  }
  int64_t r = 0;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = geo.quant_tokens; t < T; ++t)
      for (int64_t d = 0; d < D; ++d) out[(h * T + t) * D + d] = HalfToFloat(u16(v.residual, r++));
}

}  // namespace qaqkv::internal
