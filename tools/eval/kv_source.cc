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
#include "base/endian.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "kernels/half.h"
#include "nlohmann/json.hpp"

namespace qaqkv::eval {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

// ---------------------------------------------------------------------------
// Number formats. Values are read as little-endian (base/endian.h) so the
// reader is independent of host endianness; fp16 through kernels/half.h, the
// codec's own conversion.

enum class DType { kF16, kBF16, kF32 };

struct TensorInfo {
  DType dtype;
  std::vector<uint64_t> shape;
  uint64_t begin, end;  // relative to the data area
};

void Decode(const unsigned char* src, DType dtype, size_t n, float* dst) {
  switch (dtype) {
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) dst[i] = HalfToFloat(base::LoadLe16(src + 2 * i));
      break;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        dst[i] = std::bit_cast<float>(uint32_t{base::LoadLe16(src + 2 * i)} << 16);
      }
      break;
    case DType::kF32:
      for (size_t i = 0; i < n; ++i) {
        dst[i] = std::bit_cast<float>(base::LoadLe32(src + 4 * i));
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
  QAQKV_ASSIGN_OR_RETURN(const std::string bytes, base::ReadFile(path, "kv file"));
  if (bytes.size() < 8) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: ", bytes.size(),
                                            " bytes, shorter than the header length"));
  }
  const uint64_t header_len = base::LoadLe64(bytes.data());
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

}  // namespace qaqkv::eval
