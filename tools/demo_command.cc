// `qaqkv demo`: the main job end to end against a running qaqkv-server.
//
// For each dataset a chat session is offloaded with QAQ and, for
// comparison, as exact fp16 and as int4 through the same service; then
// resumed into fresh buffers and checked:
// - synthetic llama3-8b geometry, a 4096-token session (seeded generator);
// - tinylm-kv: real KV of a small trained byte-level model (data/), whose
//   block keys come from the real token ids (the file's text).
// Each session is followed by held-out queries (the next turn), so the
// attention-output error after resume is measured as `qaqkv eval` does.
// fp16 sessions must come back bit-exact; int4 and QAQ sessions exactly as
// the codec decodes them locally (the transport loses nothing).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "kernels/codec.h"
#include "qaqkv/client.h"
#include "tools/commands.h"
#include "tools/eval/evaluator.h"
#include "tools/eval/kv_source.h"
#include "tools/internal/flag_check.h"
#include "tools/internal/kv_prep.h"
#include "tools/internal/report.h"

namespace qaqkv::tools {
namespace {

namespace qc = qaqkv::client;

struct Dataset {
  std::string name;
  eval::KvSample sample;
  int session_tokens = 0;  // the cached prefix; queries after it are held out
  int block_tokens = 256;
  std::vector<int32_t> token_ids;
  std::string codec;  // the QAQ config calibrated for this model (`qaqkv eval`)
};

// Median resume time and time until layer 0 was usable, seconds.
struct ResumeTime {
  double resume_s = 0, layer0_s = 0;
};

struct Outcome {
  uint64_t fp16_bytes = 0, stored_bytes = 0;
  double offload_s = 0, resume_s = 0, layer0_s = 0;
  std::vector<ResumeTime> paced;  // one per paced client, in order
  double attn_err = 0;
  bool verified = false;
  std::string check;
};

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

absl::StatusOr<Outcome> RunSession(qc::Client& client, std::span<qc::Client* const> paced,
                                   const Dataset& ds, const std::string& codec,
                                   const std::string& nonce, int max_queries) {
  const eval::KvSample& s = ds.sample;
  const int P = ds.session_tokens, H = s.kv_heads, D = s.head_dim, L = s.num_layers;
  QAQKV_ASSIGN_OR_RETURN(const CodecConfig cfg, ParseCodecConfig(codec));

  qc::Geometry g;
  g.num_layers = L;
  g.num_kv_heads = H;
  g.num_q_heads = s.q_heads;
  g.head_dim = D;
  g.block_tokens = ds.block_tokens;
  const HostBuffers in = ToFp16Nhd(s, P);
  std::vector<std::vector<float>> attention, q2;
  if (cfg.kind == CodecKind::kQaq) {
    QAQKV_RETURN_IF_ERROR(SideInputs(s, P, cfg, &attention, &q2));
  }

  // Block keys from the token ids, scoped by a per-run nonce so a second
  // demo run against the same server measures a real offload, not hits.
  const std::string fingerprint = absl::StrCat(ds.name, "/", nonce);
  std::vector<qc::BlockKey> keys =
      qc::Client::ComputeBlockKeys(fingerprint, codec, ds.token_ids, ds.block_tokens);
  keys.resize(std::min<size_t>(keys.size(), size_t(P / ds.block_tokens)));

  qc::SessionSpec spec;
  spec.session_id = absl::StrCat("demo-", ds.name, "-", cfg.Name().substr(0, cfg.Name().find(':')),
                                 "-", nonce);
  spec.geometry = g;
  spec.codec = codec;
  spec.blocks = keys;
  spec.token_count = P;
  spec.ttl = absl::Hours(1);
  qc::HostKv kv;
  kv.dtype = qc::DType::kF16;
  kv.layout = qc::Layout::kNHD;
  kv.tokens = P;
  for (int l = 0; l < L; ++l) {
    kv.k.push_back(in.k[l].data());
    kv.v.push_back(in.v[l].data());
  }
  qc::QaqInputs side;
  for (auto& a : attention) side.attention.emplace_back(a);
  for (auto& q : q2) side.q2.emplace_back(q);
  side.context_tokens = P;

  QAQKV_ASSIGN_OR_RETURN(const qc::ServerStats before, client.GetStats());
  const auto t0 = std::chrono::steady_clock::now();
  QAQKV_RETURN_IF_ERROR(client.OffloadSession(spec, kv, side).status());
  Outcome out;
  out.offload_s = Since(t0);
  QAQKV_ASSIGN_OR_RETURN(const qc::ServerStats after, client.GetStats());
  QAQKV_ASSIGN_OR_RETURN(const qc::SessionInfo saved, client.GetSession(spec.session_id));
  // The blocks' pages plus the tail page kept in the session record. The
  // keys are scoped by codec and nonce, so the offload stored every block
  // afresh; if the tenant did not grow, someone else's deletes overlapped
  // it and no honest size (or ratio) can be reported.
  if (!keys.empty() && after.tenant_bytes <= before.tenant_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the offload added no bytes to the tenant (", before.tenant_bytes, " before, ",
        after.tenant_bytes, " after): its blocks were cached already or the tenant shrank "
        "meanwhile, so the stored size cannot be measured"));
  }
  out.stored_bytes = after.tenant_bytes - before.tenant_bytes + saved.tail_bytes;
  out.fp16_bytes = uint64_t{2} * 2 * L * uint64_t(P) * H * D;

  // Resume into fresh buffers, layer by layer. Five times per client, each
  // into buffers reset first: a resume takes tens of milliseconds, so one
  // run can land on the server's RocksDB flushing what the offloads just
  // wrote. The median is reported, and the last resume is the one verified
  // below.
  HostBuffers res;
  qc::MutableHostKv dst;
  dst.dtype = qc::DType::kF16;
  dst.layout = qc::Layout::kNHD;
  dst.tokens = P;
  for (int l = 0; l < L; ++l) {
    res.k.emplace_back(size_t(P) * H * D);
    res.v.emplace_back(size_t(P) * H * D);
    dst.k.push_back(res.k.back().data());
    dst.v.push_back(res.v.back().data());
  }
  constexpr int kResumes = 5;
  absl::StatusOr<qc::SessionInfo> info = absl::UnknownError("not resumed");
  auto resume = [&](qc::Client& via) -> absl::StatusOr<ResumeTime> {
    std::vector<std::pair<double, double>> timings;  // (resume, layer 0) seconds
    for (int r = 0; r < kResumes; ++r) {
      for (int l = 0; l < L; ++l) {
        std::fill(res.k[l].begin(), res.k[l].end(), uint16_t{0xffff});
        std::fill(res.v[l].begin(), res.v[l].end(), uint16_t{0xffff});
      }
      const auto r0 = std::chrono::steady_clock::now();
      double layer0 = -1;
      info = via.ResumeSession(spec.session_id, dst, [&](int layer) {
        if (layer == 0) layer0 = Since(r0);
      });
      const double total = Since(r0);
      if (!info.ok()) return info.status();
      timings.emplace_back(total, layer0);
    }
    std::sort(timings.begin(), timings.end());
    return ResumeTime{timings[kResumes / 2].first, timings[kResumes / 2].second};
  };
  // Unpaced first, as every codec's session is, right after its offload;
  // then over each emulated link. Every resume writes the same values, and
  // the last one is verified below.
  QAQKV_ASSIGN_OR_RETURN(const ResumeTime t, resume(client));
  out.resume_s = t.resume_s;
  out.layer0_s = t.layer0_s;
  for (qc::Client* via : paced) {
    QAQKV_ASSIGN_OR_RETURN(const ResumeTime pt, resume(*via));
    out.paced.push_back(pt);
  }
  if (info->token_count != uint64_t(P)) return absl::InternalError("resumed token_count differs");

  // Stored session layout: full blocks, then the tail. The transport must
  // return exactly what the codec decodes: check layer 0 and the last layer
  // against a local encode/decode of the same rows (fp16: the input itself).
  bool exact = true;
  const int blocks = static_cast<int>(keys.size());
  for (int l : {0, L - 1}) {
    if (cfg.kind == CodecKind::kFp16) {
      exact &= res.k[l] == in.k[l] && res.v[l] == in.v[l];
      continue;
    }
    for (int b = 0; b < blocks; ++b) {
      const size_t off = size_t(b) * ds.block_tokens * H * D, n = size_t(ds.block_tokens) * H * D;
      QaqSideInputs si;
      if (!attention.empty()) {
        si.attention = std::span<const float>(attention[l]).subspan(size_t(b) * ds.block_tokens * H,
                                                                   size_t(ds.block_tokens) * H);
        si.q2 = q2[l];
      }
      si.context_tokens = P;
      const PageShape shape{ds.block_tokens, H, D};
      QAQKV_ASSIGN_OR_RETURN(
          const std::vector<uint8_t> page,
          EncodePage(cfg, shape, {in.k[l].data() + off, DType::kF16, Layout::kNHD},
                     {in.v[l].data() + off, DType::kF16, Layout::kNHD}, si));
      std::vector<uint16_t> kd(n), vd(n);
      QAQKV_RETURN_IF_ERROR(DecodePage(page, {kd.data(), DType::kF16, Layout::kNHD},
                                       {vd.data(), DType::kF16, Layout::kNHD}));
      exact &= std::equal(kd.begin(), kd.end(), res.k[l].begin() + off) &&
               std::equal(vd.begin(), vd.end(), res.v[l].begin() + off);
    }
  }
  out.verified = exact;
  out.check = cfg.kind == CodecKind::kFp16 ? "bit-exact" : "= local decode";

  double err = 0;
  for (int l = 0; l < L; ++l) {
    QAQKV_ASSIGN_OR_RETURN(const eval::Metrics m,
                           eval::CompareAttention(s, l, P, ToFloatHnd(res.k[l], P, H, D),
                                                  ToFloatHnd(res.v[l], P, H, D), max_queries));
    err += m.out_rel_err;
  }
  out.attn_err = err / L;
  (void)client.DeleteSession(spec.session_id);
  return out;
}

int Fail(const std::string& msg, int code = 1) {
  std::fprintf(stderr, "qaqkv demo: %s\n", msg.c_str());
  return code;
}

// The codec config of `flag`, which must be a QAQ one. The demo compares
// QAQ against fp16 and int4, and each codec's stored bytes are what its
// offload added to the server. Any other codec here would repeat a baseline
// row, and its offload would find the blocks the baseline just stored (same
// keys): 0 bytes, an infinite "ratio".
absl::StatusOr<CodecConfig> ParseQaqFlag(absl::string_view flag, const std::string& text) {
  auto cfg = ParseCodecConfig(text);
  if (!cfg.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", cfg.status().message()));
  }
  if (cfg->kind != CodecKind::kQaq) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": must be a QAQ config (qaq, qaq-layer, qaq-cs or qaq-cc, e.g. "
                     "'qaq-cc:s=1e-4,x=1e-2,o=0'), got \"", text,
                     "\"; fp16 and int4 are always run as the baselines"));
  }
  return cfg;
}

}  // namespace

int RunDemo(const DemoArgs& args) {
  Format format;
  if (!ParseFormat(args.format, &format)) return Fail("--format: expected table, csv or json", 2);
  if (args.tokens < 256 || args.tokens % 256 != 0) {
    return Fail("--tokens: a positive multiple of 256", 2);
  }
  // Before anything is generated or sent: a bad number would otherwise
  // surface late, as an internal message that names no flag.
  if (absl::Status st = FirstError({CheckRange("--held-out", args.held_out, 1, 1 << 20),
                                    CheckRange("--max-queries", args.max_queries, 0, 1 << 20)});
      !st.ok()) {
    return Fail(std::string(st.message()), 2);
  }
  auto qaq = ParseQaqFlag("--codec", args.codec);
  if (!qaq.ok()) return Fail(std::string(qaq.status().message()), 2);
  auto tiny_qaq = ParseQaqFlag("--tinylm-codec", args.tinylm_codec);
  if (!tiny_qaq.ok()) return Fail(std::string(tiny_qaq.status().message()), 2);

  qc::ClientOptions o;
  o.target = args.target;
  o.bearer_token = args.token;
  o.deadline = absl::Seconds(120);
  auto client = qc::Client::Create(o);
  if (!client.ok()) return Fail(client.status().ToString(), 2);
  if (auto st = (*client)->GetStats(); !st.ok()) {
    return Fail(absl::StrCat("cannot reach qaqkv-server at ", args.target, ": ", st.status().ToString()));
  }
  // One client per emulated link, paced as one NIC of that speed.
  std::vector<std::unique_ptr<qc::Client>> paced_clients;
  std::vector<qc::Client*> paced;
  for (double gbps : args.link_gbps) {
    if (!(gbps > 0) || gbps > 1e4) return Fail("--link-gbps: each speed in (0, 10000] Gb/s", 2);
    qc::ClientOptions po = o;
    po.link_bytes_per_second = gbps * 1e9 / 8;
    auto c = qc::Client::Create(po);
    if (!c.ok()) return Fail(c.status().ToString(), 2);
    paced.push_back(c->get());
    paced_clients.push_back(std::move(*c));
  }

  std::vector<Dataset> datasets;
  {
    std::fprintf(stderr, "qaqkv demo: generating %s KV of %d tokens (+%d held-out)...\n",
                 args.geometry.c_str(), args.tokens, args.held_out);
    eval::SyntheticOptions so;
    so.geometry = args.geometry;
    so.tokens = args.tokens + args.held_out;
    so.seed = args.seed;
    auto s = eval::GenerateSynthetic(so);
    if (!s.ok()) return Fail(s.status().ToString(), 2);
    Dataset d;
    d.name = args.geometry;
    d.sample = std::move(*s);
    d.session_tokens = args.tokens;
    d.codec = args.codec;
    std::mt19937 rng(static_cast<uint32_t>(args.seed));
    d.token_ids.resize(d.sample.tokens);
    for (int32_t& id : d.token_ids) id = static_cast<int32_t>(rng() % 128256);
    datasets.push_back(std::move(d));
  }
  if (!args.data.empty()) {
    auto samples = eval::LoadSafetensorsPath(args.data);
    if (!samples.ok()) return Fail(samples.status().ToString(), 2);
    for (eval::KvSample& s : *samples) {
      Dataset d;
      d.name = absl::StrCat("tinylm-", s.name);
      // 3 full blocks and a 32-token tail, then the held-out turn.
      d.session_tokens = std::min(s.tokens - 32, 3 * 256 + 32);
      if (s.token_ids.empty()) {
        s.token_ids.resize(s.tokens);
        for (int i = 0; i < s.tokens; ++i) s.token_ids[i] = i;
      }
      d.token_ids = s.token_ids;
      d.codec = args.tinylm_codec;
      d.sample = std::move(s);
      datasets.push_back(std::move(d));
    }
  }

  const std::string nonce = absl::StrFormat("%x", absl::ToUnixMicros(absl::Now()));
  Report report({"dataset", "codec", "tokens", "fp16_MiB", "stored_MiB", "ratio", "offload_MB_s",
                 "resume_ms", "resume_MB_s", "layer0_ms", "attn_err", "check"});
  // Each session goes through three codecs: exact fp16, the int4 baseline
  // and the model's QAQ config.
  constexpr int kCodecs = 3;
  auto codec_of = [&](int c, const Dataset& d) {
    return c == 0 ? std::string("fp16") : c == 1 ? std::string("int4") : d.codec;
  };
  std::vector<std::pair<Outcome, Outcome>> results;  // (fp16, qaq) per dataset
  bool ok = true;
  // tinylm files are aggregated into one row per codec.
  Outcome tiny[kCodecs];
  int tiny_tokens = 0, tiny_n = 0;
  for (const Dataset& d : datasets) {
    std::fprintf(stderr, "qaqkv demo: %s: offload and resume...\n", d.name.c_str());
    Outcome oc[kCodecs];
    for (int c = 0; c < kCodecs; ++c) {
      const std::string codec = codec_of(c, d);
      // The links are emulated for the first (synthetic, large) session only.
      auto r = RunSession(**client, &d == &datasets.front()
                                        ? std::span<qc::Client* const>(paced)
                                        : std::span<qc::Client* const>(),
                          d, codec, nonce, args.max_queries);
      if (!r.ok()) return Fail(absl::StrCat(d.name, " ", codec, ": ", r.status().ToString()));
      oc[c] = *r;
      ok &= r->verified;
    }
    const bool is_tiny = d.name.rfind("tinylm-", 0) == 0;
    if (is_tiny) {
      for (int c = 0; c < kCodecs; ++c) {
        tiny[c].fp16_bytes += oc[c].fp16_bytes;
        tiny[c].stored_bytes += oc[c].stored_bytes;
        tiny[c].offload_s += oc[c].offload_s;
        tiny[c].resume_s += oc[c].resume_s;
        tiny[c].layer0_s += oc[c].layer0_s;
        tiny[c].attn_err += oc[c].attn_err;
        tiny[c].verified = (tiny_n == 0 || tiny[c].verified) && oc[c].verified;
        tiny[c].check = oc[c].check;
      }
      tiny_tokens += d.session_tokens;
      ++tiny_n;
      continue;
    }
    results.emplace_back(oc[0], oc[2]);
    for (int c = 0; c < kCodecs; ++c) {
      const Outcome& x = oc[c];
      report.Add({{d.name}, {c == 2 ? qaq->Name() : codec_of(c, d)}, {int64_t{d.session_tokens}},
                  {x.fp16_bytes / 1048576.0, 1}, {x.stored_bytes / 1048576.0, 1},
                  {double(x.fp16_bytes) / x.stored_bytes, 2}, {x.fp16_bytes / x.offload_s / 1e6, 0},
                  {x.resume_s * 1e3, 1}, {x.fp16_bytes / x.resume_s / 1e6, 0},
                  {x.layer0_s * 1e3, 2}, {x.attn_err, 4},
                  {x.verified ? x.check : std::string("MISMATCH")}});
    }
  }
  if (tiny_n > 0) {
    for (int c = 0; c < kCodecs; ++c) {
      const Outcome& x = tiny[c];
      report.Add({{absl::StrCat("tinylm-kv (", tiny_n, " files)")},
                  {c == 2 ? tiny_qaq->Name() : codec_of(c, datasets.back())},
                  {int64_t{tiny_tokens}},
                  {x.fp16_bytes / 1048576.0, 2}, {x.stored_bytes / 1048576.0, 2},
                  {double(x.fp16_bytes) / x.stored_bytes, 2}, {x.fp16_bytes / x.offload_s / 1e6, 0},
                  {x.resume_s * 1e3, 1}, {x.fp16_bytes / x.resume_s / 1e6, 0},
                  {x.layer0_s * 1e3, 2}, {x.attn_err / tiny_n, 4},
                  {x.verified ? x.check : std::string("MISMATCH")}});
    }
  }
  report.Print(format);
  if (format == Format::kTable && !results.empty()) {
    const auto& [f, q] = results[0];
    std::printf(
        "\n%s session of %d tokens: QAQ stores %.2fx fewer bytes than fp16. Resume, median of "
        "five, fp16 through its fast path at full speed; layer 0 is usable when its pages are "
        "decoded:\n",
        datasets[0].name.c_str(), datasets[0].session_tokens,
        double(q.fp16_bytes) / q.stored_bytes);
    std::printf("%-22s %10s %10s %9s %14s %14s\n", "link", "fp16_ms", "qaq_ms", "speedup",
                "fp16_layer0_ms", "qaq_layer0_ms");
    auto row = [](const std::string& link, const ResumeTime& a, const ResumeTime& b) {
      std::printf("%-22s %10.1f %10.1f %8.2fx %14.2f %14.2f\n", link.c_str(), a.resume_s * 1e3,
                  b.resume_s * 1e3, a.resume_s / b.resume_s, a.layer0_s * 1e3, b.layer0_s * 1e3);
    };
    for (size_t i = 0; i < args.link_gbps.size() && i < f.paced.size() && i < q.paced.size(); ++i) {
      row(absl::StrFormat("%g Gb/s (client-paced)", args.link_gbps[i]), f.paced[i], q.paced[i]);
    }
    row("loopback, unpaced", {f.resume_s, f.layer0_s}, {q.resume_s, q.layer0_s});
    std::printf("Every resumed session %s.\n",
                ok ? "matched (fp16 bit-exact, QAQ equal to a local decode)" : "did NOT match");
  }
  return ok ? 0 : 1;
}

}  // namespace qaqkv::tools
