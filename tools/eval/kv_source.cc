#include "tools/eval/kv_source.h"

#include <algorithm>
#include <array>
#include <bit>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace qaqkv::eval {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
constexpr uint64_t kMaxSyntheticFloats = uint64_t{1} << 31;

// ---------------------------------------------------------------------------
// Number formats. Bytes are assembled explicitly so the reader is independent
// of host endianness.

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in fp32.
    const float mag = static_cast<float>(mant) * 0x1p-24f;
    return sign != 0 ? -mag : mag;
  }
  // Inf and NaN keep their payload; normal numbers rebias 15 -> 127.
  const uint32_t fexp = exp == 31 ? 0xffu : exp + 112;
  return std::bit_cast<float>(sign | (fexp << 23) | (mant << 13));
}

enum class DType { kF16, kBF16, kF32 };

struct TensorInfo {
  DType dtype;
  std::vector<uint64_t> shape;
  uint64_t begin, end;  // relative to the data area
};

void Decode(const unsigned char* src, DType dtype, size_t n, float* dst) {
  switch (dtype) {
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        dst[i] = HalfToFloat(static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8)));
      }
      break;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        const uint32_t bits = src[2 * i] | (uint32_t{src[2 * i + 1]} << 8);
        dst[i] = std::bit_cast<float>(bits << 16);
      }
      break;
    case DType::kF32:
      for (size_t i = 0; i < n; ++i) {
        const unsigned char* b = src + 4 * i;
        dst[i] = std::bit_cast<float>(b[0] | (uint32_t{b[1]} << 8) |
                                      (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 24));
      }
      break;
  }
}

// ---------------------------------------------------------------------------
// Safetensors reader.

absl::Status Invalid(const std::string& path, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", std::string(what)));
}

std::string ShapeString(const std::vector<uint64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  if (ec) return absl::InternalError(absl::StrCat(path, ": ", ec.message()));
  if (!fs::is_regular_file(st)) return Invalid(path, "not a regular file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  const std::streamoff size = in ? static_cast<std::streamoff>(in.tellg()) : -1;
  if (size < 0) return absl::InternalError(absl::StrCat(path, ": cannot open"));
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) {
    return absl::InternalError(absl::StrCat(path, ": cannot read"));
  }
  return bytes;
}

// Validates one header entry on its own: dtype, rank, offsets and that the byte
// length agrees with shape and dtype.
absl::StatusOr<TensorInfo> ParseTensor(const std::string& path, const std::string& name,
                                       const json& e) {
  const std::string where = absl::StrCat("tensor ", name);
  if (!e.is_object()) {
    return Invalid(path, absl::StrCat(where, ": entry is not an object"));
  }
  TensorInfo t;
  const auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string()) {
    return Invalid(path, absl::StrCat(where, ": missing string field dtype"));
  }
  const std::string& dtype = dt->get_ref<const std::string&>();
  if (dtype == "F16") {
    t.dtype = DType::kF16;
  } else if (dtype == "BF16") {
    t.dtype = DType::kBF16;
  } else if (dtype == "F32") {
    t.dtype = DType::kF32;
  } else {
    return Invalid(path, absl::StrCat(where, " has dtype ", dtype,
                                      "; only F16, BF16 and F32 are supported"));
  }
  const auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array()) {
    return Invalid(path, absl::StrCat(where, ": missing array field shape"));
  }
  uint64_t bytes = t.dtype == DType::kF32 ? 4 : 2;
  for (const json& d : *sh) {
    // Dims above INT_MAX cannot fit a KvSample; refusing them also keeps the
    // byte count below from overflowing.
    if (!d.is_number_unsigned() || d.get<uint64_t>() > INT_MAX) {
      return Invalid(
          path, absl::StrCat(where, ": shape entries must be integers in [0, 2^31)"));
    }
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && bytes > (uint64_t{1} << 62) / dim) {
      return Invalid(path, absl::StrCat(where, ": shape too large"));
    }
    t.shape.push_back(dim);
    bytes *= dim;
  }
  const auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2 ||
      !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) {
    return Invalid(
        path, absl::StrCat(where, ": data_offsets must be two non-negative integers"));
  }
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.begin > t.end || t.end - t.begin != bytes) {
    return Invalid(path, absl::StrCat(where, ": data_offsets [", t.begin, ", ", t.end,
                                      "] do not hold the ", bytes, " bytes of shape ",
                                      ShapeString(t.shape), " ", dtype));
  }
  return t;
}

// A positive integer metadata field (the format stores strings; plain JSON
// integers are accepted too). nullopt when absent.
absl::StatusOr<std::optional<int>> MetaInt(const std::string& path, const json* meta,
                                           const char* field) {
  if (meta == nullptr) return std::nullopt;
  const auto it = meta->find(field);
  if (it == meta->end()) return std::nullopt;
  int value = 0;
  bool ok = false;
  if (it->is_string()) {
    ok = absl::SimpleAtoi(it->get_ref<const std::string&>(), &value);
  } else if (it->is_number_unsigned() && it->get<uint64_t>() <= INT_MAX) {
    value = static_cast<int>(it->get<uint64_t>());
    ok = true;
  }
  if (!ok || value <= 0) {
    return Invalid(path,
                   absl::StrCat("metadata field ", field, " is not a positive integer"));
  }
  return value;
}

}  // namespace

absl::StatusOr<KvSample> LoadSafetensorsFile(const std::string& path) {
  QAQKV_ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
  if (bytes.size() < 8) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: ", bytes.size(),
                                            " bytes, shorter than the header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  }
  if (header_len > kMaxHeaderBytes) {
    return Invalid(path, absl::StrCat("header length ", header_len, " exceeds 100 MiB"));
  }
  if (header_len > bytes.size() - 8) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: header of ", header_len,
                                            " bytes, file has ", bytes.size() - 8,
                                            " after the length"));
  }
  const char* header_begin = bytes.data() + 8;
  const json header = json::parse(header_begin, header_begin + header_len, nullptr,
                                  /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Invalid(path, "header is not a JSON object");
  }
  const unsigned char* data =
      reinterpret_cast<const unsigned char*>(bytes.data()) + 8 + header_len;
  const uint64_t data_size = bytes.size() - 8 - header_len;

  std::map<std::string, TensorInfo> tensors;
  const json* meta = nullptr;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return Invalid(path, "__metadata__ is not an object");
      meta = &*it;
      continue;
    }
    QAQKV_ASSIGN_OR_RETURN(TensorInfo t, ParseTensor(path, it.key(), *it));
    tensors.emplace(it.key(), std::move(t));
  }

  // Tensors may not overlap (as the format requires), which also bounds the
  // decoded size by the file size. Data past the end is truncation when the
  // header describes the packed layout every writer produces; otherwise the
  // header itself is wrong.
  std::vector<std::pair<const TensorInfo*, const std::string*>> order;
  for (const auto& [name, t] : tensors) order.emplace_back(&t, &name);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return std::pair(a.first->begin, a.first->end) <
           std::pair(b.first->begin, b.first->end);
  });
  bool packed = true;
  uint64_t prev_end = 0;
  for (const auto& [t, name] : order) {
    if (t->begin < prev_end) {
      return Invalid(path, absl::StrCat("tensor ", *name, ": data_offsets [", t->begin,
                                        ", ", t->end, "] overlap another tensor"));
    }
    packed = packed && t->begin == prev_end;
    prev_end = t->end;
  }
  if (prev_end > data_size) {
    if (packed) {
      return absl::DataLossError(absl::StrCat(path, ": truncated: tensor data needs ",
                                              prev_end, " bytes, file holds ",
                                              data_size));
    }
    for (const auto& [t, name] : order) {
      if (t->end > data_size) {
        return Invalid(path, absl::StrCat("tensor ", *name, ": data_offsets [", t->begin,
                                          ", ", t->end, "] outside the data area of ",
                                          data_size, " bytes"));
      }
    }
  }

  auto find = [&](const std::string& name) -> absl::StatusOr<const TensorInfo*> {
    const auto it = tensors.find(name);
    if (it == tensors.end()) return Invalid(path, absl::StrCat("missing tensor ", name));
    if (it->second.shape.size() != 3) {
      return Invalid(path,
                     absl::StrCat("tensor ", name, " has shape ",
                                  ShapeString(it->second.shape), ", expected rank 3"));
    }
    return &it->second;
  };
  QAQKV_ASSIGN_OR_RETURN(const TensorInfo* k0, find("layers.0.k"));
  QAQKV_ASSIGN_OR_RETURN(const TensorInfo* q0, find("layers.0.q"));

  KvSample s;
  s.name = fs::path(path).stem().string();
  struct Field {
    const char* key;
    int* out;
    uint64_t inferred;
  };
  const Field fields[] = {
      {"num_kv_heads", &s.kv_heads, k0->shape[0]},
      {"seq_len", &s.tokens, k0->shape[1]},
      {"head_dim", &s.head_dim, k0->shape[2]},
      {"num_q_heads", &s.q_heads, q0->shape[0]},
  };
  for (const Field& f : fields) {
    QAQKV_ASSIGN_OR_RETURN(const std::optional<int> m, MetaInt(path, meta, f.key));
    *f.out = m.value_or(static_cast<int>(f.inferred));
    if (*f.out <= 0) return Invalid(path, absl::StrCat(f.key, " is 0"));
  }
  QAQKV_ASSIGN_OR_RETURN(const std::optional<int> layers, MetaInt(path, meta, "num_layers"));
  if (layers.has_value()) {
    s.num_layers = *layers;
  } else {
    while (tensors.contains(absl::StrCat("layers.", s.num_layers, ".k"))) ++s.num_layers;
  }
  // A byte-level model's file carries its text: the token ids are its bytes.
  if (meta != nullptr && meta->contains("text") && (*meta)["text"].is_string()) {
    const std::string& text = (*meta)["text"].get_ref<const std::string&>();
    if (text.size() == static_cast<size_t>(s.tokens)) {
      s.token_ids.assign(text.begin(), text.end());
      for (int32_t& id : s.token_ids) id &= 0xff;
    }
  }
  if (s.q_heads % s.kv_heads != 0) {
    return Invalid(path, absl::StrCat("num_q_heads ", s.q_heads,
                                      " is not a multiple of num_kv_heads ", s.kv_heads));
  }

  const uint64_t t = s.tokens, d = s.head_dim;
  for (int l = 0; l < s.num_layers; ++l) {
    LayerKv& layer = s.layers.emplace_back();
    const std::pair<const char*, std::vector<float>*> parts[] = {
        {"k", &layer.k}, {"v", &layer.v}, {"q", &layer.q}};
    for (const auto& [part, out] : parts) {
      const std::string name = absl::StrCat("layers.", l, ".", part);
      QAQKV_ASSIGN_OR_RETURN(const TensorInfo* info, find(name));
      const std::vector<uint64_t> want = {
          static_cast<uint64_t>(*part == 'q' ? s.q_heads : s.kv_heads), t, d};
      if (info->shape != want) {
        return Invalid(path, absl::StrCat("tensor ", name, " has shape ",
                                          ShapeString(info->shape), ", expected ",
                                          ShapeString(want)));
      }
      out->resize(want[0] * t * d);
      Decode(data + info->begin, info->dtype, out->size(), out->data());
    }
  }
  return s;
}

absl::StatusOr<std::vector<KvSample>> LoadSafetensorsPath(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  }
  std::vector<KvSample> samples;
  if (!fs::is_directory(st)) {
    QAQKV_ASSIGN_OR_RETURN(KvSample s, LoadSafetensorsFile(path));
    samples.push_back(std::move(s));
    return samples;
  }
  std::vector<std::string> files;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (it->path().extension() == ".safetensors" && it->is_regular_file(type_ec)) {
      files.push_back(it->path().string());
    }
  }
  if (ec) return absl::InternalError(absl::StrCat(path, ": ", ec.message()));
  if (files.empty()) {
    return absl::NotFoundError(absl::StrCat(path, ": no *.safetensors files"));
  }
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    QAQKV_ASSIGN_OR_RETURN(KvSample s, LoadSafetensorsFile(f));
    samples.push_back(std::move(s));
  }
  return samples;
}

std::vector<Geometry> GeometryPresets() {
  return {{"llama2-7b", 32, 32, 32, 128},
          {"llama3-8b", 32, 8, 32, 128},
          {"qwen2.5-7b", 28, 4, 28, 128},
          {"tinylm", 4, 1, 2, 64}};
}

absl::StatusOr<Geometry> FindGeometry(std::string_view name) {
  std::vector<std::string> names;
  for (Geometry& g : GeometryPresets()) {
    if (g.name == name) return std::move(g);
    names.push_back(g.name);
  }
  return absl::NotFoundError(absl::StrCat("unknown geometry '", std::string(name),
                                          "'; known: ", absl::StrJoin(names, ", ")));
}

// ---------------------------------------------------------------------------
// Synthetic generator.

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
