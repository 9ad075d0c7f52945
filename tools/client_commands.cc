// The operator's subcommands against a running qaqkv-server: `put` and
// `get` (a safetensors KV file in and out as a session), `lookup`,
// `sessions` and `stats`.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "kernels/codec.h"
#include "kernels/half.h"
#include "qaqkv/client.h"
#include "tools/commands.h"
#include "tools/internal/connect.h"
#include "tools/internal/flag_check.h"
#include "tools/eval/kv_source.h"
#include "tools/internal/kv_prep.h"
#include "tools/internal/report.h"

namespace qaqkv::tools {
namespace {

namespace qc = qaqkv::client;

int Fail(std::string_view cmd, const std::string& msg, int code = 1) {
  std::fprintf(stderr, "qaqkv %.*s: %s\n", static_cast<int>(cmd.size()), cmd.data(), msg.c_str());
  return code;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<qc::Client>> Connect(const ConnectArgs& a) {
  // absl::Seconds(NaN) is no deadline at all, and a negative count reaches
  // the client as a huge one: check the numbers before they are converted.
  QAQKV_RETURN_IF_ERROR(FirstError({CheckPositive("--deadline", a.deadline_s),
                                     CheckRange("--replicas", a.replicas, 0, 1024),
                                     CheckRange("--write-quorum", a.write_quorum, 0, 1024)}));
  qc::ClientOptions o;
  if (!a.servers.empty()) {
    o.servers = a.servers;
  } else if (!a.discovery.empty()) {
    o.discovery = a.discovery;
  } else {
    o.target = a.target;
  }
  o.replicas = a.replicas;
  o.write_quorum = a.write_quorum;
  o.bearer_token = a.token;
  o.deadline = absl::Seconds(a.deadline_s);
  if (!a.tls_ca.empty() || !a.tls_cert.empty()) {
    o.tls = true;
    if (!a.tls_ca.empty()) {
      auto ca = ReadFile(a.tls_ca);
      if (!ca.ok()) return absl::InvalidArgumentError(absl::StrCat("--tls-ca: ", ca.status().message()));
      o.tls_root_certs_pem = *ca;
    }
    if (a.tls_cert.empty() != a.tls_key.empty()) {
      return absl::InvalidArgumentError("--tls-cert and --tls-key: give both or neither");
    }
    if (!a.tls_cert.empty()) {
      auto cert = ReadFile(a.tls_cert);
      if (!cert.ok()) return absl::InvalidArgumentError(absl::StrCat("--tls-cert: ", cert.status().message()));
      auto key = ReadFile(a.tls_key);
      if (!key.ok()) return absl::InvalidArgumentError(absl::StrCat("--tls-key: ", key.status().message()));
      o.tls_client_cert_pem = *cert;
      o.tls_client_key_pem = *key;
    }
    o.tls_server_name = a.tls_server_name;
  }
  return qc::Client::Create(o);
}

std::string DescribeServers(const ConnectArgs& a) {
  if (!a.servers.empty()) {
    std::string out;
    for (const std::string& s : a.servers) out += (out.empty() ? "" : ",") + s;
    return out;
  }
  return a.discovery.empty() ? a.target : a.discovery;
}

namespace {

// Exit code for a failed call: 2 for what the caller must fix, 1 otherwise.
int CodeFor(const absl::Status& s) {
  return absl::IsInvalidArgument(s) || absl::IsNotFound(s) || absl::IsUnauthenticated(s) ? 2 : 1;
}

absl::StatusOr<eval::KvSample> LoadSample(const std::string& path) {
  auto s = eval::LoadSafetensorsFile(path);
  if (!s.ok()) return s.status();
  if (s->token_ids.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": carries no token ids (its metadata has no `text` of seq_len bytes)"));
  }
  return s;
}

qc::Geometry GeometryOf(const eval::KvSample& s, int block_tokens) {
  qc::Geometry g;
  g.num_layers = s.num_layers;
  g.num_kv_heads = s.kv_heads;
  g.num_q_heads = s.q_heads;
  g.head_dim = s.head_dim;
  g.block_tokens = block_tokens;
  return g;
}

// Values of one sample tensor that are NaN or Inf, or finite but beyond
// fp16's range (they become Inf when the file's floats are sent as fp16).
struct BadValues {
  std::string tensor;  // as named in the file, e.g. "layers.3.k"
  size_t count = 0;
  size_t first = 0;    // flat index of the first, in the file's layout
};

std::vector<BadValues> NonFiniteValues(const eval::KvSample& s, bool with_q) {
  std::vector<BadValues> out;
  auto scan = [&](const std::vector<float>& values, std::string name) {
    BadValues b{std::move(name)};
    for (size_t i = 0; i < values.size(); ++i) {
      if (!(std::fabs(values[i]) <= 65504.0f)) {  // NaN fails this too
        if (b.count++ == 0) b.first = i;
      }
    }
    if (b.count > 0) out.push_back(std::move(b));
  };
  for (int l = 0; l < s.num_layers; ++l) {
    scan(s.layers[l].k, absl::StrCat("layers.", l, ".k"));
    scan(s.layers[l].v, absl::StrCat("layers.", l, ".v"));
    if (with_q) scan(s.layers[l].q, absl::StrCat("layers.", l, ".q"));
  }
  return out;
}

std::string Describe(const std::vector<BadValues>& bad) {
  size_t total = 0;
  for (const BadValues& b : bad) total += b.count;
  std::string out = absl::StrCat(total, " NaN, Inf or beyond-fp16 values in ", bad.size(),
                                 " tensor(s), first in ", bad[0].tensor, " (", bad[0].count,
                                 ", the first at flat index ", bad[0].first, ")");
  return out;
}

std::string Hex(const qc::BlockKey& k) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(k.data()), k.size()));
}

}  // namespace

int RunPut(const PutArgs& a) {
  auto cfg = ParseCodecConfig(a.codec);
  if (!cfg.ok()) return Fail("put", absl::StrCat("--codec: ", cfg.status().message()), 2);
  if (absl::Status st = FirstError({CheckAtLeast("--block-tokens", a.block_tokens, 1),
                                    CheckAtLeast("--ttl", a.ttl_s, 0)});
      !st.ok()) {
    return Fail("put", std::string(st.message()), 2);
  }
  auto s = LoadSample(a.file);
  if (!s.ok()) return Fail("put", s.status().ToString(), 2);
  // The codec stores a group holding NaN or Inf exactly, as fp16
  // (kernels/codec.h), so such KV round-trips; but QAQ derives its side
  // inputs (attention, query norms) from K and Q, and those must be finite.
  if (std::vector<BadValues> bad = NonFiniteValues(*s, cfg->kind == CodecKind::kQaq);
      !bad.empty()) {
    const bool in_side_inputs = absl::c_any_of(bad, [](const BadValues& b) {
      return absl::EndsWith(b.tensor, ".k") || absl::EndsWith(b.tensor, ".q");
    });
    if (cfg->kind == CodecKind::kQaq && in_side_inputs) {
      return Fail("put", absl::StrCat(a.file, ": ", Describe(bad), "; QAQ's side inputs need "
                                      "finite K and Q (use --codec fp16 or int4 to store them "
                                      "as they are)"),
                  2);
    }
    std::fprintf(stderr, "qaqkv put: warning: %s: %s; they are stored as fp16 NaN/Inf\n",
                 a.file.c_str(), Describe(bad).c_str());
  }
  auto client = Connect(a.conn);
  if (!client.ok()) return Fail("put", client.status().ToString(), 2);
  const int P = s->tokens;
  const HostBuffers in = ToFp16Nhd(*s, P);
  std::vector<std::vector<float>> attention, q2;
  if (cfg->kind == CodecKind::kQaq) {
    if (absl::Status st = SideInputs(*s, P, *cfg, &attention, &q2); !st.ok()) {
      return Fail("put", st.ToString());
    }
  }
  qc::SessionSpec spec;
  spec.session_id = a.session;
  spec.geometry = GeometryOf(*s, a.block_tokens);
  spec.codec = a.codec;
  spec.blocks = qc::Client::ComputeBlockKeys(a.fingerprint, a.codec, s->token_ids, a.block_tokens);
  spec.token_count = P;
  spec.ttl = absl::Seconds(a.ttl_s);
  qc::HostKv kv;
  kv.tokens = P;
  for (int l = 0; l < s->num_layers; ++l) {
    kv.k.push_back(in.k[l].data());
    kv.v.push_back(in.v[l].data());
  }
  qc::QaqInputs side;
  for (auto& x : attention) side.attention.emplace_back(x);
  for (auto& x : q2) side.q2.emplace_back(x);
  auto before = (*client)->Lookup(spec.blocks, &spec.geometry, a.codec);
  if (!before.ok()) return Fail("put", before.status().ToString(), CodeFor(before.status()));
  const auto t0 = std::chrono::steady_clock::now();
  if (absl::Status st = (*client)->OffloadSession(spec, kv, side).status(); !st.ok()) {
    return Fail("put", st.ToString(), CodeFor(st));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("session %s: %d tokens, %zu blocks (%zu were already cached) + %d-token tail, "
              "codec %s, %.1f ms\n",
              a.session.c_str(), P, spec.blocks.size(), *before,
              P - static_cast<int>(spec.blocks.size()) * a.block_tokens, cfg->Name().c_str(),
              secs * 1e3);
  return 0;
}

int RunGet(const GetArgs& a) {
  auto client = Connect(a.conn);
  if (!client.ok()) return Fail("get", client.status().ToString(), 2);
  auto info = (*client)->GetSession(a.session);
  if (!info.ok()) return Fail("get", info.status().ToString(), CodeFor(info.status()));
  const qc::Geometry& g = info->geometry;
  const size_t rows = info->token_count;
  std::vector<std::vector<uint16_t>> k(g.num_layers), v(g.num_layers);
  qc::MutableHostKv dst;
  dst.tokens = static_cast<int64_t>(rows);
  for (int l = 0; l < g.num_layers; ++l) {
    k[l].resize(rows * g.num_kv_heads * g.head_dim);
    v[l].resize(k[l].size());
    dst.k.push_back(k[l].data());
    dst.v.push_back(v[l].data());
  }
  const auto t0 = std::chrono::steady_clock::now();
  double layer0 = 0;
  auto resumed = (*client)->ResumeSession(a.session, dst, [&](int layer) {
    if (layer == 0) {
      layer0 = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!resumed.ok()) return Fail("get", resumed.status().ToString(), CodeFor(resumed.status()));
  std::printf("session %s: %zu tokens, %d layers x %d kv heads x %d, codec %s, %zu blocks; "
              "resumed in %.1f ms (layer 0 after %.1f ms)\n",
              a.session.c_str(), rows, g.num_layers, g.num_kv_heads, g.head_dim,
              info->codec.c_str(), info->blocks.size(), secs * 1e3, layer0 * 1e3);
  if (!a.compare.empty()) {
    auto s = eval::LoadSafetensorsFile(a.compare);
    if (!s.ok()) return Fail("get", s.status().ToString(), 2);
    if (s->num_layers != g.num_layers || s->kv_heads != g.num_kv_heads ||
        s->head_dim != g.head_dim || s->tokens < static_cast<int>(rows)) {
      return Fail("get", "--compare: the file's geometry does not match the session", 2);
    }
    const HostBuffers orig = ToFp16Nhd(*s, static_cast<int>(rows));
    double num = 0, den = 0;
    // A NaN or Inf on either side makes the sums NaN, or (a NaN compared
    // away) a perfect 0: count them instead, and report no number.
    size_t bad_resumed = 0, bad_reference = 0;
    for (int l = 0; l < g.num_layers; ++l) {
      for (size_t i = 0; i < k[l].size(); ++i) {
        for (auto [x, y] : {std::pair{k[l][i], orig.k[l][i]}, std::pair{v[l][i], orig.v[l][i]}}) {
          const double a1 = ::qaqkv::HalfToFloat(x), b1 = ::qaqkv::HalfToFloat(y);
          const bool bad_a = !std::isfinite(a1), bad_b = !std::isfinite(b1);
          bad_resumed += bad_a;
          bad_reference += bad_b;
          if (bad_a || bad_b) continue;
          num += (a1 - b1) * (a1 - b1);
          den += b1 * b1;
        }
      }
    }
    if (bad_resumed > 0 || bad_reference > 0) {
      std::printf("against %s: relative RMS error of K and V not computable: %zu non-finite "
                  "values in the resumed KV, %zu in the reference (as fp16)\n",
                  a.compare.c_str(), bad_resumed, bad_reference);
      return Fail("get", absl::StrCat("--compare: ", bad_resumed + bad_reference,
                                      " non-finite values; no error computed"));
    }
    if (den == 0 && num > 0) {
      std::printf("against %s: relative RMS error of K and V not computable: the reference is "
                  "all zeros (absolute RMS error %.5g)\n",
                  a.compare.c_str(), std::sqrt(num / (2.0 * g.num_layers * k[0].size())));
      return Fail("get", "--compare: the reference is all zeros; no relative error");
    }
    std::printf("against %s: relative RMS error of K and V %.5f\n", a.compare.c_str(),
                den > 0 ? std::sqrt(num / den) : 0.0);
  }
  return 0;
}

int RunLookup(const LookupArgs& a) {
  // The same rule as put's: keys are only comparable at the same size.
  if (absl::Status st = CheckAtLeast("--block-tokens", a.block_tokens, 1); !st.ok()) {
    return Fail("lookup", std::string(st.message()), 2);
  }
  std::vector<qc::BlockKey> keys;
  qc::Geometry g;
  const bool from_file = !a.file.empty();
  if (from_file) {
    auto s = LoadSample(a.file);
    if (!s.ok()) return Fail("lookup", s.status().ToString(), 2);
    // Only full blocks have keys: a file shorter than one block has none,
    // which is not "no FILE given".
    if (static_cast<int64_t>(s->token_ids.size()) < a.block_tokens) {
      return Fail("lookup",
                  absl::StrCat("--block-tokens: ", a.block_tokens, " is more than the ",
                               s->token_ids.size(), " tokens of ", a.file,
                               ", so it has no full block to look up"),
                  2);
    }
    g = GeometryOf(*s, a.block_tokens);
    keys = qc::Client::ComputeBlockKeys(a.fingerprint, a.codec, s->token_ids, a.block_tokens);
  }
  for (const std::string& hex : a.keys) {
    std::string bytes;
    if (hex.size() != 32 || !absl::c_all_of(hex, [](char c) { return absl::ascii_isxdigit(c); })) {
      return Fail("lookup", absl::StrCat("--keys: \"", hex, "\" is not 32 hex digits"), 2);
    }
    bytes = absl::HexStringToBytes(hex);
    qc::BlockKey k;
    std::copy(bytes.begin(), bytes.end(), k.begin());
    keys.push_back(k);
  }
  if (keys.empty()) return Fail("lookup", "give a safetensors FILE or --keys", 2);
  // Connect only once the input is known good: a bad FILE or key then
  // costs no connection (and starts no gRPC threads).
  auto client = Connect(a.conn);
  if (!client.ok()) return Fail("lookup", client.status().ToString(), 2);
  auto n = from_file ? (*client)->Lookup(keys, &g, a.codec) : (*client)->Lookup(keys);
  if (!n.ok()) return Fail("lookup", n.status().ToString(), CodeFor(n.status()));
  std::printf("%zu of %zu blocks cached\n", *n, keys.size());
  for (size_t i = 0; i < keys.size() && a.verbose; ++i) {
    std::printf("%s %s\n", Hex(keys[i]).c_str(), i < *n ? "cached" : "missing");
  }
  return 0;
}

int RunSessions(const SessionsArgs& a) {
  if (absl::Status st = CheckRange("--limit", a.limit, 0, 1 << 30); !st.ok()) {
    return Fail("sessions", std::string(st.message()), 2);
  }
  auto client = Connect(a.conn);
  if (!client.ok()) return Fail("sessions", client.status().ToString(), 2);
  if (a.action == "list") {
    auto ids = (*client)->ListSessions(static_cast<size_t>(a.limit));
    if (!ids.ok()) return Fail("sessions", ids.status().ToString(), CodeFor(ids.status()));
    for (const std::string& id : *ids) std::printf("%s\n", id.c_str());
    return 0;
  }
  if (a.id.empty()) return Fail("sessions", absl::StrCat(a.action, ": needs a session id"), 2);
  if (a.action == "show") {
    auto info = (*client)->GetSession(a.id);
    if (!info.ok()) return Fail("sessions", info.status().ToString(), CodeFor(info.status()));
    const qc::Geometry& g = info->geometry;
    std::printf("session %s\n  tokens %llu in %zu blocks (%zu committed) + tail\n"
                "  geometry %d layers, %d kv heads, %d q heads, head_dim %d, block %d tokens\n"
                "  codec %s\n  created %s, accessed %s, ttl %s\n",
                info->session_id.c_str(), static_cast<unsigned long long>(info->token_count),
                info->blocks.size(), info->committed_prefix, g.num_layers, g.num_kv_heads,
                g.num_q_heads, g.head_dim, g.block_tokens, info->codec.c_str(),
                absl::FormatTime(info->created).c_str(), absl::FormatTime(info->accessed).c_str(),
                info->ttl == absl::ZeroDuration() ? "none"
                                                  : absl::FormatDuration(info->ttl).c_str());
    return 0;
  }
  absl::Status st = a.action == "delete" ? (*client)->DeleteSession(a.id)
                    : a.action == "touch" ? (*client)->TouchSession(a.id)
                                          : absl::InvalidArgumentError(
                                                "action: list, show, delete or touch");
  if (!st.ok()) return Fail("sessions", st.ToString(), CodeFor(st));
  std::printf("%s %s\n", a.action == "delete" ? "deleted" : "touched", a.id.c_str());
  return 0;
}

int RunStats(const StatsArgs& a) {
  Format format;
  if (!ParseFormat(a.format, &format)) return Fail("stats", "--format: table, csv or json", 2);
  auto client = Connect(a.conn);
  if (!client.ok()) return Fail("stats", client.status().ToString(), 2);
  auto s = (*client)->GetStats();
  if (!s.ok()) return Fail("stats", s.status().ToString(), CodeFor(s.status()));
  Report r({"stat", "value"});
  auto row = [&](const char* name, uint64_t v) { r.Add({{std::string(name)}, {int64_t(v)}}); };
  row("tenant_bytes", s->tenant_bytes);
  row("tenant_blocks", s->tenant_blocks);
  row("total_bytes", s->total_bytes);
  row("blocks", s->blocks);
  // Every tier by its name, in read order (dram, then disk unless the
  // server is memory-only).
  for (const qaqkv::client::TierStats& t : s->tiers) {
    for (const auto& [field, v] :
         {std::pair<const char*, uint64_t>{"hits", t.hits}, {"misses", t.misses},
          {"evictions", t.evictions}, {"bytes", t.bytes}, {"entries", t.entries},
          {"budget_bytes", t.budget_bytes}}) {
      r.Add({{absl::StrCat(t.name, "_", field)}, {int64_t(v)}});
    }
  }
  row("blocks_evicted", s->blocks_evicted);
  row("checksum_failures", s->checksum_failures);
  row("background_errors", s->background_errors);
  r.Add({{std::string("server_version")}, {s->version}});
  r.Print(format);
  return 0;
}

}  // namespace qaqkv::tools
