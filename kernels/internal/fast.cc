#include "kernels/internal/fast.h"

#include <cpuid.h>

#include <atomic>

#include "kernels/internal/reference.h"

namespace qaqkv {

namespace {
// F16C is read from CPUID directly: clang 14 does not know it as a
// __builtin_cpu_supports feature name.
bool CpuHasF16c() {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
}  // namespace

bool CpuHasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("bmi2") && CpuHasF16c();
  return has;
}

bool CpuHasAvx512() {
  static const bool has = CpuHasAvx2() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512vbmi2");
  return has;
}

namespace internal {
namespace {
std::atomic<bool> force_avx2{false};

// The AVX-512 build runs when the CPU has it, unless a test asked for AVX2.
bool UseAvx512() { return CpuHasAvx512() && !force_avx2.load(std::memory_order_relaxed); }
}  // namespace

void ForceAvx2ForTesting(bool on) { force_avx2.store(on, std::memory_order_relaxed); }

bool FastPathSupports(const PageHeader& h) {
  const bool kind_ok = h.kind == CodecKind::kInt8 || h.kind == CodecKind::kInt4 ||
                       h.kind == CodecKind::kQaq;
  return kind_ok && CpuHasAvx2() && (h.flags & (kFlagLayerGroups | kFlagRotate | kFlagEntropyCoded)) == 0 &&
         h.outliers <= 1 && h.head_dim <= kMaxHeadDim;
}

absl::Status EncodeTensorFast(const TensorTask& task, const TensorView& in, TensorEncoding& enc) {
  return UseAvx512() ? avx512::EncodeHeadTensor(task, in, enc)
                        : avx2::EncodeHeadTensor(task, in, enc);
}

void KeyChannelStatsFast(const TensorView& in, const PageShape& s, bool center, bool scale,
                         std::vector<uint16_t>& offsets, std::vector<uint16_t>& scales) {
  if (UseAvx512()) {
    avx512::KeyChannelStats(in, s.tokens, s.kv_heads, s.head_dim, center, scale, offsets, scales);
  } else {
    avx2::KeyChannelStats(in, s.tokens, s.kv_heads, s.head_dim, center, scale, offsets, scales);
  }
}

bool GroupedFastPathSupports(const PageHeader& h) {
  const bool kind_ok = h.kind == CodecKind::kInt8 || h.kind == CodecKind::kInt4 ||
                       h.kind == CodecKind::kKivi2 || h.kind == CodecKind::kQaq;
  return kind_ok && CpuHasAvx2() && (h.flags & kFlagEntropyCoded) == 0;
}

void EncodeGroupedTensorFast(const TensorTask& task, const float* x, const float* raw,
                             TensorEncoding& enc) {
  if (UseAvx512()) {
    avx512::EncodeGroupedTensor(task, x, raw, enc);
  } else {
    avx2::EncodeGroupedTensor(task, x, raw, enc);
  }
}

void DecodeGroupedTensorFast(const SectionView& view, float* out) {
  if (UseAvx512()) {
    avx512::DecodeGroupedTensor(view, out);
  } else {
    avx2::DecodeGroupedTensor(view, out);
  }
  if (view.rotate) {
    UnrotateQuantizedRows(view, out, [](float* row, int head_dim) {
      RotateRowsFast(row, 1, head_dim, true);
    });
  }
}

bool EntropyFastPathSupports(const PageHeader& h) {
  return CpuHasAvx2() && (h.flags & kFlagEntropyCoded) != 0 && h.head_dim % kEcLanes == 0 &&
         h.head_dim <= kMaxHeadDim;
}

absl::Status DecodeEntropyTensorFast(const SectionView& view, void* out, DType dtype,
                                     Layout layout) {
  return UseAvx512() ? avx512::DecodeEntropyTensor(view, out, dtype, layout)
                     : avx2::DecodeEntropyTensor(view, out, dtype, layout);
}

const EcRowKernels* EntropyRowKernelsFast() {
  if (!CpuHasAvx2()) return nullptr;
  return UseAvx512() ? &avx512::kEcRowKernels : &avx2::kEcRowKernels;
}

bool ToCanonicalFast(const TensorView& in, const PageShape& s, float* out) {
  if (!CpuHasAvx2()) return false;
  return UseAvx512() ? avx512::ToCanonical(in, s.tokens, s.kv_heads, s.head_dim, out)
                     : avx2::ToCanonical(in, s.tokens, s.kv_heads, s.head_dim, out);
}

bool FromCanonicalFast(const float* canon, const PageShape& s, void* out, DType dtype,
                       Layout layout) {
  if (!CpuHasAvx2()) return false;
  if (UseAvx512()) {
    avx512::FromCanonical(canon, s.tokens, s.kv_heads, s.head_dim, out, dtype, layout);
  } else {
    avx2::FromCanonical(canon, s.tokens, s.kv_heads, s.head_dim, out, dtype, layout);
  }
  return true;
}

bool RotateRowsFast(float* rows, int64_t count, int head_dim, bool inverse) {
  if (!CpuHasAvx2()) return false;
  if (UseAvx512()) {
    avx512::RotateRows(rows, count, head_dim, inverse);
  } else {
    avx2::RotateRows(rows, count, head_dim, inverse);
  }
  return true;
}

bool Fp16FastPathSupported() { return CpuHasAvx2(); }

void Fp16StoreFence() { __builtin_ia32_sfence(); }

void StreamCopy(const uint8_t* src, uint8_t* dst, size_t n) {
  if (UseAvx512()) {
    avx512::StreamCopy(src, dst, n);
  } else {
    avx2::StreamCopy(src, dst, n);
  }
}

bool EncodeFp16RowsFast(const TensorView& in, const PageShape& s, int64_t first_row,
                        int64_t rows, uint8_t* out) {
  return UseAvx512()
             ? avx512::EncodeFp16Rows(in, s.tokens, s.kv_heads, s.head_dim, first_row, rows, out)
             : avx2::EncodeFp16Rows(in, s.tokens, s.kv_heads, s.head_dim, first_row, rows, out);
}

void DecodeFp16RowsFast(const uint8_t* rows_in, const PageShape& s, int64_t first_row,
                        int64_t rows, void* out, DType dtype, Layout layout) {
  if (UseAvx512()) {
    avx512::DecodeFp16Rows(rows_in, s.tokens, s.kv_heads, s.head_dim, first_row, rows, out,
                           dtype, layout);
  } else {
    avx2::DecodeFp16Rows(rows_in, s.tokens, s.kv_heads, s.head_dim, first_row, rows, out, dtype,
                         layout);
  }
}

bool DecodeTensorFast(const PageHeader& header, const SectionView& view, void* out, DType dtype,
                      Layout layout) {
  // Decoding also takes rotated rows (-rh); encoding them is the reference's.
  PageHeader unrotated = header;
  unrotated.flags &= ~kFlagRotate;
  if (!FastPathSupports(unrotated)) return false;
  if (UseAvx512()) {
    avx512::DecodeHeadTensor(view, out, dtype, layout);
  } else {
    avx2::DecodeHeadTensor(view, out, dtype, layout);
  }
  return true;
}

}  // namespace internal
}  // namespace qaqkv
