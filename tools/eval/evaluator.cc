#include "tools/eval/evaluator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace qaqkv::eval {
namespace {

struct Accum {
  double rel = 0, kl = 0, top8 = 0;
  int64_t n = 0;
  int64_t fp16_bytes = 0, stored_bytes = 0;
  double values = 0, paper_bits = 0;  // paper bits weighted by values
};

// Exact or approximate attention of one query over keys [0, t].
void Attend(const float* q, int D, int t_end, const float* k_pre, const float* v_pre, int P,
            const float* k_all, const float* v_all, std::vector<double>& s, std::vector<double>& x) {
  const double scale = 1.0 / std::sqrt(double(D));
  s.resize(t_end + 1);
  double mx = -INFINITY;
  for (int j = 0; j <= t_end; ++j) {
    const float* kk = j < P ? k_pre + size_t(j) * D : k_all + size_t(j) * D;
    float dot = 0;
    for (int d = 0; d < D; ++d) dot += q[d] * kk[d];
    s[j] = dot * scale;
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (int j = 0; j <= t_end; ++j) sum += (s[j] = std::exp(s[j] - mx));
  x.assign(D, 0.0);
  for (int j = 0; j <= t_end; ++j) {
    s[j] /= sum;
    const float* vv = j < P ? v_pre + size_t(j) * D : v_all + size_t(j) * D;
    for (int d = 0; d < D; ++d) x[d] += s[j] * vv[d];
  }
}

void TopK(const std::vector<double>& s, int k, std::vector<int>& out) {
  out.resize(s.size());
  for (size_t i = 0; i < s.size(); ++i) out[i] = static_cast<int>(i);
  const int kk = std::min<int>(k, static_cast<int>(s.size()));
  std::partial_sort(out.begin(), out.begin() + kk, out.end(),
                    [&](int a, int b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
  out.resize(kk);
  std::sort(out.begin(), out.end());
}

struct AttentionSums {
  double rel = 0, kl = 0, top8 = 0;
  int64_t n = 0;
};

// Held-out query positions in [P, T), evenly spaced, at most `max_queries`
// (0: all).
std::vector<int> HeldOutQueries(int T, int P, int max_queries) {
  const int future = T - P;
  const int nq = max_queries > 0 ? std::min(max_queries, future) : future;
  std::vector<int> qpos(nq);
  for (int i = 0; i < nq; ++i) qpos[i] = P + static_cast<int>(int64_t(i) * future / nq);
  return qpos;
}

// Sums over (query position, q head) of the attention-output error, the KL
// of the attention and the top-8 overlap, when the prefix [0, P) of `layer`
// is replaced by kd, vd ([kv_heads][P][head_dim]).
AttentionSums SumAttentionError(const KvSample& smp, int layer, int P, std::span<const float> kd,
                                std::span<const float> vd, const std::vector<int>& qpos) {
  const LayerKv& L = smp.layers[layer];
  const int T = smp.tokens, H = smp.kv_heads, Q = smp.q_heads, D = smp.head_dim;
  const int group = Q / H;
  std::vector<double> s_exact, x_exact, s_apx, x_apx;
  std::vector<int> top_exact, top_apx;
  AttentionSums out;
  for (int qh = 0; qh < Q; ++qh) {
    const int h = qh / group;
    const float* k_all = L.k.data() + size_t(h) * T * D;
    const float* v_all = L.v.data() + size_t(h) * T * D;
    for (int t : qpos) {
      const float* q = L.q.data() + (size_t(qh) * T + t) * D;
      Attend(q, D, t, k_all, v_all, P, k_all, v_all, s_exact, x_exact);
      Attend(q, D, t, kd.data() + size_t(h) * P * D, vd.data() + size_t(h) * P * D, P, k_all,
             v_all, s_apx, x_apx);
      double num = 0, den = 0, kl = 0;
      for (int d = 0; d < D; ++d) {
        num += (x_apx[d] - x_exact[d]) * (x_apx[d] - x_exact[d]);
        den += x_exact[d] * x_exact[d];
      }
      for (size_t j = 0; j < s_exact.size(); ++j) {
        if (s_exact[j] > 0) kl += s_exact[j] * std::log(s_exact[j] / std::max(s_apx[j], 1e-300));
      }
      TopK(s_exact, 8, top_exact);
      TopK(s_apx, 8, top_apx);
      int common = 0;
      for (int a : top_exact) common += std::binary_search(top_apx.begin(), top_apx.end(), a);
      out.rel += den > 0 ? std::sqrt(num / den) : std::sqrt(num);
      out.kl += std::max(kl, 0.0);
      out.top8 += double(common) / top_exact.size();
      ++out.n;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<Metrics> CompareAttention(const KvSample& sample, int layer, int prefix_tokens,
                                         std::span<const float> k_hat,
                                         std::span<const float> v_hat, int max_queries) {
  if (layer < 0 || layer >= sample.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
  }
  if (prefix_tokens < 1 || prefix_tokens >= sample.tokens) {
    return absl::InvalidArgumentError("prefix_tokens: must leave held-out tokens after it");
  }
  const size_t n = size_t(sample.kv_heads) * prefix_tokens * sample.head_dim;
  if (k_hat.size() != n || v_hat.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("k_hat/v_hat: want ", n, " values"));
  }
  const AttentionSums s = SumAttentionError(
      sample, layer, prefix_tokens, k_hat, v_hat,
      HeldOutQueries(sample.tokens, prefix_tokens, max_queries));
  if (s.n == 0) return Metrics{};
  return Metrics{s.rel / s.n, s.kl / s.n, s.top8 / s.n};
}

absl::StatusOr<std::vector<CodecResult>> Evaluate(const std::vector<KvSample>& samples,
                                                  const std::vector<CodecConfig>& codecs,
                                                  const EvalOptions& opt) {
  if (samples.empty()) return absl::InvalidArgumentError("eval: no samples");
  if (codecs.empty()) return absl::InvalidArgumentError("eval: no codecs");
  if (!(opt.cache_fraction > 0 && opt.cache_fraction < 1)) {
    return absl::InvalidArgumentError("eval: cache_fraction must be in (0, 1)");
  }
  int max_layers = 0;
  for (const KvSample& s : samples) {
    const int P = static_cast<int>(s.tokens * opt.cache_fraction);
    if (P < 1 || P >= s.tokens) {
      return absl::InvalidArgumentError(absl::StrCat("eval: sample ", s.name, " has too few tokens"));
    }
    max_layers = std::max(max_layers, s.num_layers);
  }
  const size_t C = codecs.size();
  // accum[codec][layer]
  std::vector<std::vector<Accum>> accum(C, std::vector<Accum>(max_layers));
  struct Unit { const KvSample* s; int layer; };
  std::vector<Unit> units;
  for (const KvSample& s : samples)
    for (int l = 0; l < s.num_layers; ++l) units.push_back({&s, l});

  // std::mutex, not absl::Mutex: TSan cannot see through Debian's prebuilt abseil.
  std::mutex mu;
  absl::Status first_error;
  std::atomic<size_t> next{0};
  std::atomic<int64_t> done{0};

  auto work = [&]() {
    std::vector<float> k_nhd, q_win, q_all, kd, vd;
    for (size_t u = next++; u < units.size(); u = next++) {
      const KvSample& smp = *units[u].s;
      const int layer = units[u].layer;
      const LayerKv& L = smp.layers[layer];
      const int T = smp.tokens, H = smp.kv_heads, Q = smp.q_heads, D = smp.head_dim;
      const int P = static_cast<int>(T * opt.cache_fraction);
      const std::vector<int> qpos = HeldOutQueries(T, P, opt.max_queries);

      k_nhd.resize(size_t(P) * H * D);
      for (int h = 0; h < H; ++h)
        for (int t = 0; t < P; ++t)
          std::copy_n(L.k.data() + (size_t(h) * T + t) * D, D, k_nhd.data() + (size_t(t) * H + h) * D);

      std::vector<Accum> local(C);
      for (size_t c = 0; c < C; ++c) {
        const CodecConfig& cfg = codecs[c];
        WindowStats ws;
        QaqSideInputs side;
        side.context_tokens = P;
        if (cfg.kind == CodecKind::kQaq) {
          const int n = std::min(cfg.window, P);
          std::vector<int> wpos(n);
          q_win.resize(size_t(n) * Q * D);
          for (int i = 0; i < n; ++i) {
            wpos[i] = P - n + i;
            for (int qh = 0; qh < Q; ++qh)
              std::copy_n(L.q.data() + (size_t(qh) * T + wpos[i]) * D, D,
                          q_win.data() + (size_t(i) * Q + qh) * D);
          }
          WindowInputs wi{P, H, Q, D, k_nhd, q_win, wpos};
          auto r = ComputeWindowStats(wi);
          if (!r.ok()) {
            std::lock_guard<std::mutex> l(mu);
            first_error.Update(r.status());
            return;
          }
          ws = std::move(*r);
          // Q2 over every query of the prefix (the cache has seen them all):
          // the 90th percentile of ten window norms is too noisy a bound.
          q_all.resize(size_t(P) * Q * D);
          for (int t = 0; t < P; ++t)
            for (int qh = 0; qh < Q; ++qh)
              std::copy_n(L.q.data() + (size_t(qh) * T + t) * D, D, q_all.data() + (size_t(t) * Q + qh) * D);
          auto q2 = ComputeQ2(q_all, Q, H, D, 0.9);
          if (!q2.ok()) {
            std::lock_guard<std::mutex> l(mu);
            first_error.Update(q2.status());
            return;
          }
          ws.q2 = std::move(*q2);
          side.q2 = ws.q2;
        }
        // Encode the prefix page by page (HND fp32 input), decode to HND fp32.
        kd.assign(size_t(H) * P * D, 0);
        vd.assign(size_t(H) * P * D, 0);
        const int page = opt.page_tokens > 0 ? opt.page_tokens : P;
        std::vector<float> kin, vin, kout, vout, att;
        for (int t0 = 0; t0 < P; t0 += page) {
          const int n = std::min(page, P - t0);
          kin.resize(size_t(H) * n * D);
          vin.resize(kin.size());
          for (int h = 0; h < H; ++h) {
            std::copy_n(L.k.data() + (size_t(h) * T + t0) * D, size_t(n) * D, kin.data() + size_t(h) * n * D);
            std::copy_n(L.v.data() + (size_t(h) * T + t0) * D, size_t(n) * D, vin.data() + size_t(h) * n * D);
          }
          if (!ws.attention.empty()) {
            att.assign(ws.attention.begin() + size_t(t0) * H, ws.attention.begin() + size_t(t0 + n) * H);
            side.attention = att;
          }
          const PageShape shape{n, H, D};
          auto bytes = EncodePage(cfg, shape, {kin.data(), DType::kF32, Layout::kHND},
                                  {vin.data(), DType::kF32, Layout::kHND}, side);
          absl::Status st = bytes.status();
          if (st.ok()) {
            kout.resize(kin.size());
            vout.resize(vin.size());
            st = DecodePage(*bytes, {kout.data(), DType::kF32, Layout::kHND},
                            {vout.data(), DType::kF32, Layout::kHND});
          }
          absl::StatusOr<PageStats> ps = st.ok() ? ComputePageStats(*bytes) : st;
          if (!ps.ok()) {
            std::lock_guard<std::mutex> l(mu);
            first_error.Update(base::Annotate(ps.status(), cfg.Name()));
            return;
          }
          for (int h = 0; h < H; ++h) {
            std::copy_n(kout.data() + size_t(h) * n * D, size_t(n) * D, kd.data() + (size_t(h) * P + t0) * D);
            std::copy_n(vout.data() + size_t(h) * n * D, size_t(n) * D, vd.data() + (size_t(h) * P + t0) * D);
          }
          local[c].fp16_bytes += int64_t{2} * 2 * shape.values();
          local[c].stored_bytes += ps->encoded_bytes;
          local[c].values += double(ps->values);
          local[c].paper_bits += ps->paper_bits_per_value() * double(ps->values);
        }
        const AttentionSums sums = SumAttentionError(smp, layer, P, kd, vd, qpos);
        local[c].rel += sums.rel;
        local[c].kl += sums.kl;
        local[c].top8 += sums.top8;
        local[c].n += sums.n;
      }
      {
        std::lock_guard<std::mutex> l(mu);
        for (size_t c = 0; c < C; ++c) {
          Accum& a = accum[c][layer];
          a.rel += local[c].rel;
          a.kl += local[c].kl;
          a.top8 += local[c].top8;
          a.n += local[c].n;
          a.fp16_bytes += local[c].fp16_bytes;
          a.stored_bytes += local[c].stored_bytes;
          a.values += local[c].values;
          a.paper_bits += local[c].paper_bits;
        }
      }
      const int64_t d = ++done;
      if (opt.progress) {
        std::lock_guard<std::mutex> l(mu);
        opt.progress(d, static_cast<int64_t>(units.size()));
      }
    }
  };
  const int threads = std::max(1, std::min<int>(opt.threads, static_cast<int>(units.size())));
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  QAQKV_RETURN_IF_ERROR(first_error);

  std::vector<CodecResult> out;
  for (size_t c = 0; c < C; ++c) {
    CodecResult r;
    r.codec = std::string(CodecKindName(codecs[c].kind));
    r.config = codecs[c].Name();
    Accum total;
    for (const Accum& a : accum[c]) {
      Metrics m;
      if (a.n > 0) m = {a.rel / a.n, a.kl / a.n, a.top8 / a.n};
      r.per_layer.push_back(m);
      total.rel += a.rel;
      total.kl += a.kl;
      total.top8 += a.top8;
      total.n += a.n;
      total.fp16_bytes += a.fp16_bytes;
      total.stored_bytes += a.stored_bytes;
      total.values += a.values;
      total.paper_bits += a.paper_bits;
    }
    r.fp16_bytes = total.fp16_bytes;
    r.stored_bytes = total.stored_bytes;
    r.bits_per_value = 8.0 * total.stored_bytes / total.values;
    r.ratio = double(total.fp16_bytes) / total.stored_bytes;
    r.ratio_paper = 16.0 / (total.paper_bits / total.values);
    r.metrics = {total.rel / total.n, total.kl / total.n, total.top8 / total.n};
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace qaqkv::eval
