#include "tools/internal/kv_prep.h"

#include <algorithm>
#include <random>

#include "base/status_macros.h"
#include "kernels/half.h"

namespace qaqkv::tools {

absl::StatusOr<std::vector<std::string>> RandomPages(const CodecConfig& config,
                                                     const PageShape& shape, int count,
                                                     uint32_t seed) {
  std::vector<std::string> pages;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> k(shape.values()), v(shape.values());
  for (int p = 0; p < count; ++p) {
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    QAQKV_ASSIGN_OR_RETURN(const std::vector<uint8_t> page,
                           EncodePage(config, shape, {k.data(), DType::kF32, Layout::kNHD},
                                      {v.data(), DType::kF32, Layout::kNHD}));
    pages.emplace_back(reinterpret_cast<const char*>(page.data()), page.size());
  }
  return pages;
}

HostBuffers ToFp16Nhd(const eval::KvSample& s, int tokens) {
  HostBuffers out;
  const int H = s.kv_heads, D = s.head_dim, T = s.tokens;
  for (const eval::LayerKv& L : s.layers) {
    auto& k = out.k.emplace_back(size_t(tokens) * H * D);
    auto& v = out.v.emplace_back(size_t(tokens) * H * D);
    for (int t = 0; t < tokens; ++t)
      for (int h = 0; h < H; ++h)
        for (int d = 0; d < D; ++d) {
          const size_t src = (size_t(h) * T + t) * D + d, dst = (size_t(t) * H + h) * D + d;
          k[dst] = FloatToHalf(L.k[src]);
          v[dst] = FloatToHalf(L.v[src]);
        }
  }
  return out;
}

std::vector<float> ToFloatHnd(const std::vector<uint16_t>& nhd, int tokens, int H, int D) {
  std::vector<float> out(nhd.size());
  for (int t = 0; t < tokens; ++t)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < D; ++d)
        out[(size_t(h) * tokens + t) * D + d] = HalfToFloat(nhd[(size_t(t) * H + h) * D + d]);
  return out;
}

absl::Status SideInputs(const eval::KvSample& s, int P, const CodecConfig& cfg,
                        std::vector<std::vector<float>>* attention,
                        std::vector<std::vector<float>>* q2) {
  const int H = s.kv_heads, Q = s.q_heads, D = s.head_dim, T = s.tokens;
  for (const eval::LayerKv& L : s.layers) {
    std::vector<float> k_nhd(size_t(P) * H * D);
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < P; ++t)
        std::copy_n(L.k.data() + (size_t(h) * T + t) * D, D, k_nhd.data() + (size_t(t) * H + h) * D);
    const int n = std::min(cfg.window, P);
    std::vector<int> wpos(n);
    std::vector<float> q_win(size_t(n) * Q * D);
    for (int i = 0; i < n; ++i) {
      wpos[i] = P - n + i;
      for (int qh = 0; qh < Q; ++qh)
        std::copy_n(L.q.data() + (size_t(qh) * T + wpos[i]) * D, D,
                    q_win.data() + (size_t(i) * Q + qh) * D);
    }
    QAQKV_ASSIGN_OR_RETURN(WindowStats ws, ComputeWindowStats({P, H, Q, D, k_nhd, q_win, wpos}));
    std::vector<float> q_all(size_t(P) * Q * D);
    for (int t = 0; t < P; ++t)
      for (int qh = 0; qh < Q; ++qh)
        std::copy_n(L.q.data() + (size_t(qh) * T + t) * D, D, q_all.data() + (size_t(t) * Q + qh) * D);
    QAQKV_ASSIGN_OR_RETURN(std::vector<float> qq, ComputeQ2(q_all, Q, H, D, 0.9));
    attention->push_back(std::move(ws.attention));
    q2->push_back(std::move(qq));
  }
  return absl::OkStatus();
}

}  // namespace qaqkv::tools
