// Local page work: encode, decode, inspect, verify and count pages with the
// project's C++ codec, and QAQ's side inputs from a model's queries and keys.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "base/strings.h"
#include "python/bindings/common.h"
#include "qaqkv/client.h"

namespace qaqkv::python {
namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

PageShape Shape(int tokens, int kv_heads, int head_dim) { return {tokens, kv_heads, head_dim}; }

// A float32 side input of exactly `want` values (0: any), or an empty span.
std::span<const float> SideSpan(const std::optional<FloatArray>& a, py::ssize_t want,
                                std::string_view field) {
  if (!a.has_value()) return {};
  if (want > 0 && a->size() != want) {
    ThrowStatus(absl::InvalidArgumentError(
        absl::StrCat(base::AsAbsl(field), ": ", a->size(), " values, expected ", want)));
  }
  return {a->data(), static_cast<size_t>(a->size())};
}

py::dict InfoDict(const PageInfo& info) {
  py::dict d;
  d["version"] = info.version;
  d["codec"] = std::string(CodecKindName(info.kind));
  d["group"] = info.group == GroupLevel::kHead ? "head" : "layer";
  d["tokens"] = info.shape.tokens;
  d["kv_heads"] = info.shape.kv_heads;
  d["head_dim"] = info.shape.head_dim;
  d["encoded_bytes"] = info.encoded_bytes;
  return d;
}

py::bytes Encode(const std::string& codec, int tokens, int kv_heads, int head_dim,
                 uintptr_t k, uintptr_t v, const std::string& dtype, const std::string& layout,
                 const std::optional<FloatArray>& attention, const std::optional<FloatArray>& q2,
                 int64_t context_tokens) {
  const CodecConfig config = Unwrap(ParseCodecConfig(codec));
  const DType dt = Unwrap(ParseDType(dtype, "dtype"));
  const Layout lay = Unwrap(ParseLayout(layout, "layout"));
  QaqSideInputs side;
  side.attention = SideSpan(attention, py::ssize_t{tokens} * kv_heads, "attention");
  side.q2 = SideSpan(q2, kv_heads, "q2");
  side.context_tokens = context_tokens;
  absl::StatusOr<std::vector<uint8_t>> page;
  {
    py::gil_scoped_release release;
    page = EncodePage(config, Shape(tokens, kv_heads, head_dim),
                      {reinterpret_cast<const void*>(k), dt, lay},
                      {reinterpret_cast<const void*>(v), dt, lay}, side);
  }
  Check(page.status());
  return py::bytes(reinterpret_cast<const char*>(page->data()), page->size());
}

void Decode(const py::object& page, uintptr_t k, uintptr_t v, const std::string& dtype,
            const std::string& layout, int tokens, int kv_heads, int head_dim) {
  ByteView bytes(page);
  const DType dt = Unwrap(ParseDType(dtype, "dtype"));
  const Layout lay = Unwrap(ParseLayout(layout, "layout"));
  const PageShape expected = Shape(tokens, kv_heads, head_dim);
  absl::Status s;
  {
    py::gil_scoped_release release;
    s = DecodePage(bytes.bytes(), {AsPointer(k), dt, lay}, {AsPointer(v), dt, lay}, &expected);
  }
  Check(s);
}

py::dict Inspect(const py::object& page) {
  ByteView bytes(page);
  return InfoDict(Unwrap(InspectPage(bytes.bytes())));
}

py::dict Verify(const py::object& page, const std::optional<std::string>& codec) {
  ByteView bytes(page);
  std::optional<CodecConfig> config;
  if (codec.has_value()) config = Unwrap(ParseCodecConfig(*codec));
  absl::StatusOr<PageInfo> info;
  {
    py::gil_scoped_release release;
    info = VerifyPage(bytes.bytes(), config ? &*config : nullptr);
  }
  return InfoDict(Unwrap(std::move(info)));
}

py::dict Stats(const py::object& page) {
  ByteView bytes(page);
  const PageStats s = Unwrap(ComputePageStats(bytes.bytes()));
  py::dict d;
  d["values"] = s.values;
  d["encoded_bytes"] = s.encoded_bytes;
  d["outliers"] = s.outliers;
  d["exact_values"] = s.exact_values;
  d["code_bits"] = s.code_bits;
  d["ratio"] = s.ratio();
  d["paper_bits_per_value"] = s.paper_bits_per_value();
  return d;
}

py::tuple WindowStatsOf(const FloatArray& keys, const FloatArray& queries,
                        py::array_t<int, py::array::c_style | py::array::forcecast> positions) {
  if (keys.ndim() != 3 || queries.ndim() != 3) {
    ThrowStatus(absl::InvalidArgumentError(
        "keys and queries: expected [tokens, heads, head_dim] arrays"));
  }
  if (positions.ndim() != 1 || positions.shape(0) != queries.shape(0)) {
    ThrowStatus(absl::InvalidArgumentError(
        absl::StrCat("query_positions: expected ", queries.shape(0), " positions")));
  }
  WindowInputs in;
  in.context_tokens = static_cast<int>(keys.shape(0));
  in.kv_heads = static_cast<int>(keys.shape(1));
  in.head_dim = static_cast<int>(keys.shape(2));
  in.q_heads = static_cast<int>(queries.shape(1));
  if (queries.shape(2) != keys.shape(2)) {
    ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
        "queries: head_dim ", queries.shape(2), " but the keys have ", keys.shape(2))));
  }
  in.keys = {keys.data(), static_cast<size_t>(keys.size())};
  in.queries = {queries.data(), static_cast<size_t>(queries.size())};
  in.query_positions = {positions.data(), static_cast<size_t>(positions.size())};
  absl::StatusOr<WindowStats> stats;
  {
    py::gil_scoped_release release;
    stats = ComputeWindowStats(in);
  }
  Check(stats.status());
  FloatArray attention({in.context_tokens, in.kv_heads});
  std::copy(stats->attention.begin(), stats->attention.end(), attention.mutable_data());
  FloatArray q2(in.kv_heads);
  std::copy(stats->q2.begin(), stats->q2.end(), q2.mutable_data());
  return py::make_tuple(attention, q2);
}

FloatArray Q2Of(const FloatArray& queries, int kv_heads, double percentile) {
  if (queries.ndim() != 3) {
    ThrowStatus(absl::InvalidArgumentError("queries: expected a [n, q_heads, head_dim] array"));
  }
  const std::vector<float> q2 = Unwrap(ComputeQ2(
      {queries.data(), static_cast<size_t>(queries.size())}, static_cast<int>(queries.shape(1)),
      kv_heads, static_cast<int>(queries.shape(2)), percentile));
  FloatArray out(static_cast<py::ssize_t>(q2.size()));
  std::copy(q2.begin(), q2.end(), out.mutable_data());
  return out;
}

py::list BlockKeys(const std::string& model, const std::string& codec,
                   py::array_t<int32_t, py::array::c_style | py::array::forcecast> tokens,
                   int block_tokens) {
  if (tokens.ndim() != 1) {
    ThrowStatus(absl::InvalidArgumentError("token_ids: expected a 1-D sequence"));
  }
  const std::vector<client::BlockKey> keys = client::Client::ComputeBlockKeys(
      model, codec, {tokens.data(), static_cast<size_t>(tokens.size())}, block_tokens);
  py::list out;
  for (const client::BlockKey& k : keys) {
    out.append(py::bytes(reinterpret_cast<const char*>(k.data()), k.size()));
  }
  return out;
}

}  // namespace

void RegisterCodec(py::module_& m) {
  using py::arg;
  m.def("_encode", &Encode, arg("codec"), arg("tokens"), arg("kv_heads"), arg("head_dim"),
        arg("k"), arg("v"), arg("dtype"), arg("layout"), arg("attention") = py::none(),
        arg("q2") = py::none(), arg("context_tokens") = 0);
  m.def("_decode", &Decode, arg("page"), arg("k"), arg("v"), arg("dtype"), arg("layout"),
        arg("tokens"), arg("kv_heads"), arg("head_dim"));
  m.def("_inspect", &Inspect, arg("page"));
  m.def("_verify", &Verify, arg("page"), arg("codec") = py::none());
  m.def("_page_stats", &Stats, arg("page"));
  m.def("_window_stats", &WindowStatsOf, arg("keys"), arg("queries"), arg("query_positions"));
  m.def("_q2", &Q2Of, arg("queries"), arg("kv_heads"), arg("percentile") = 0.9);
  m.def("_block_keys", &BlockKeys, arg("model"), arg("codec"), arg("token_ids"),
        arg("block_tokens"));
  m.def("_canonical_codec", [](const std::string& codec) {
    return Unwrap(client::Client::CanonicalCodec(codec));
  });
  m.def("_cpu_features", [] {
    py::dict d;
    d["avx2"] = CpuHasAvx2();
    d["avx512"] = CpuHasAvx512();
    return d;
  });
}

}  // namespace qaqkv::python
