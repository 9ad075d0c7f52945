// libFuzzer target for the page readers (InspectPage, ComputePageStats,
// DecodePage). Each input is tried twice: as is (exercising the length and
// checksum checks) and with its trailing XXH3-64 recomputed, so mutations of
// the header and sections reach the parsers behind the checksum.
//
// Beyond "no crash, no sanitizer report", it checks:
//   - errors are only kDataLoss or kInvalidArgument;
//   - InspectPage, ComputePageStats and DecodePage agree on header errors;
//   - the reference and fast decoders give bit-identical outputs;
//   - a decoded page re-encoded with fp16 decodes to the same fp16 values.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/codec.h"
#include "xxhash.h"

namespace {

using qaqkv::Backend;
using qaqkv::DType;
using qaqkv::Layout;

// Keeps a single run's memory modest: pages that decode to more values than
// this are only inspected.
constexpr int64_t kMaxDecodeValues = int64_t{1} << 22;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "page_decode_fuzzer: invariant violated: %s\n", what);
    std::abort();
  }
}

bool Documented(const absl::Status& s) {
  return s.ok() || s.code() == absl::StatusCode::kDataLoss ||
         s.code() == absl::StatusCode::kInvalidArgument;
}

size_t ElemSize(DType t) { return t == DType::kF32 ? 4 : 2; }

void Exercise(std::span<const uint8_t> page, uint8_t selector) {
  const auto info = qaqkv::InspectPage(page);
  Check(Documented(info.status()), "InspectPage returned an undocumented code");
  const auto stats = qaqkv::ComputePageStats(page);
  Check(Documented(stats.status()), "ComputePageStats returned an undocumented code");
  if (!info.ok()) {
    Check(stats.status().code() == info.status().code(), "stats and inspect disagree");
  }
  if (stats.ok()) {
    Check(info.ok(), "stats ok but inspect failed");
    Check(stats->encoded_bytes == static_cast<int64_t>(page.size()), "stats size");
    Check(stats->values == 2 * info->shape.values(), "stats values");
    Check(stats->outliers >= 0 && stats->exact_values >= 0 && stats->code_bits >= 0,
          "negative stats");
    Check(stats->outliers + stats->exact_values <= stats->values, "stats exceed values");
  }

  // Output dtype/layout picked by the input, so every decoder path is reached.
  static constexpr DType kTypes[] = {DType::kF16, DType::kBF16, DType::kF32};
  const DType dt = kTypes[selector % 3];
  const Layout layout = (selector & 4) ? Layout::kHND : Layout::kNHD;
  int64_t values = 1;
  if (info.ok()) values = info->shape.values();
  if (values > kMaxDecodeValues) return;
  const size_t bytes = static_cast<size_t>(values) * ElemSize(dt);
  std::vector<uint8_t> kr(bytes), vr(bytes), kf(bytes, 0x5a), vf(bytes, 0x5a);
  const absl::Status r = qaqkv::DecodePage(page, {kr.data(), dt, layout}, {vr.data(), dt, layout},
                                           info.ok() ? &info->shape : nullptr,
                                           Backend::kReference);
  Check(Documented(r), "DecodePage returned an undocumented code");
  if (!info.ok()) {
    Check(r.code() == info.status().code(), "decode and inspect disagree");
    return;
  }
  Check(r.code() == stats.status().code(), "decode and stats disagree");
  const absl::Status f = qaqkv::DecodePage(page, {kf.data(), dt, layout}, {vf.data(), dt, layout},
                                           &info->shape, Backend::kFast);
  Check(f.code() == r.code(), "fast and reference decoders disagree on status");
  if (!r.ok()) return;
  if (kr != kf || vr != vf) {
    // Say where, so a crash report can be triaged without a debugger.
    const bool keys = kr != kf;
    const auto& a = keys ? kr : vr;
    const auto& b = keys ? kf : vf;
    const size_t at = static_cast<size_t>(std::mismatch(a.begin(), a.end(), b.begin()).first -
                                          a.begin()) / ElemSize(dt) * ElemSize(dt);
    uint32_t ra = 0, fa = 0;
    std::memcpy(&ra, a.data() + at, ElemSize(dt));
    std::memcpy(&fa, b.data() + at, ElemSize(dt));
    std::fprintf(stderr, "%s value %zu (dtype %d, layout %d, codec %d): reference %#x, fast %#x\n",
                 keys ? "K" : "V", at / ElemSize(dt), static_cast<int>(dt),
                 static_cast<int>(layout), static_cast<int>(info->kind), ra, fa);
  }
  Check(kr == kf && vr == vf, "fast and reference decoders disagree on values");

  // A successful decode has no finite value beyond fp16 range only when the
  // output is fp16; re-encoding that output as fp16 must round-trip exactly.
  if (dt == DType::kF16) {
    auto cfg = qaqkv::ParseCodecConfig("fp16");
    Check(cfg.ok(), "fp16 config");
    auto again = qaqkv::EncodePage(*cfg, info->shape, {kr.data(), dt, layout},
                                   {vr.data(), dt, layout});
    Check(again.ok(), "re-encoding a decoded page as fp16 failed");
    std::vector<uint8_t> k2(bytes), v2(bytes);
    Check(qaqkv::DecodePage(*again, {k2.data(), dt, layout}, {v2.data(), dt, layout}).ok(),
          "decoding the fp16 re-encode failed");
    // NaN payloads may be canonicalized; compare everything else bit for bit.
    for (size_t i = 0; i < bytes; i += 2) {
      uint16_t a, b;
      std::memcpy(&a, kr.data() + i, 2);
      std::memcpy(&b, k2.data() + i, 2);
      const bool nan_a = (a & 0x7c00) == 0x7c00 && (a & 0x3ff);
      const bool nan_b = (b & 0x7c00) == 0x7c00 && (b & 0x3ff);
      Check(nan_a == nan_b && (nan_a || a == b), "fp16 re-encode changed a value");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const uint8_t selector = size > 0 ? data[size / 2] : 0;
  Exercise(std::span<const uint8_t>(data, size), selector);
  if (size >= 40) {
    std::vector<uint8_t> page(data, data + size);
    const uint64_t sum = XXH3_64bits(page.data(), page.size() - 8);
    std::memcpy(page.data() + page.size() - 8, &sum, 8);
    Exercise(page, selector);
  }
  return 0;
}
