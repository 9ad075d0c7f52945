// The boundary between the host orchestration (codec_cuda.cc, g++) and the
// kernels (codec_kernels.cu, nvcc): plain structs passed by value and thin
// launchers that take raw device pointers and a stream and return the
// cudaError_t of their launches. No abseil here, so nvcc compiles only what
// the kernels need.
#ifndef QAQKV_KERNELS_CUDA_INTERNAL_LAUNCH_H_
#define QAQKV_KERNELS_CUDA_INTERNAL_LAUNCH_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/half.h"  // QAQKV_HD only

namespace qaqkv::cuda_internal {

// GroupGeometry (kernels/internal/page_format.h) as a POD for the device.
enum GeoKind : int32_t { kGeoHead = 0, kGeoLayer = 1, kGeoKiviKey = 2, kGeoKiviValue = 3 };
struct Geo {
  int32_t kind = kGeoHead;
  int32_t tokens = 0, kv_heads = 0, head_dim = 0;
  int32_t quant_tokens = 0;
  int32_t kivi_group = 0;
  int64_t groups = 0;
};

// dtype as qaqkv::DType (1 f16, 2 bf16, 3 f32); layout 0 NHD, 1 HND.
struct InView {
  const void* data = nullptr;
  int32_t dtype = 1;
  int32_t layout = 0;
};
// A dense tensor, or (block_table != nullptr) a vLLM paged cache
// [num_blocks][block_size][kv_heads][head_dim] where page token t lives at
// sequence position first_token + t.
struct OutView {
  void* data = nullptr;
  int32_t dtype = 1;
  int32_t layout = 0;
  const int32_t* block_table = nullptr;  // device
  int32_t block_size = 0;
  int32_t first_token = 0;
};

// Per-group result of the encoder's analysis pass.
struct GroupInfo {
  // The outlier thresholds as order keys (device_common.cuh AscKey/DescKey):
  // the k-th smallest element, and the k-th largest of the rest.
  unsigned long long small_key, large_key;
  uint16_t lo, step;  // fp16
  uint8_t bits;       // 0..8, or 16 for an exact group
};

// What a group contributes to the section; scanned (inclusive) over groups so
// each group finds its offsets.
struct GroupCount {
  uint64_t exact;         // 1 if the group is stored exactly
  uint64_t exact_values;  // its values if exact
  uint64_t code_bits;     // its code bits if quantized
};

// Byte offsets (from the page start) of one section's regions.
struct SectionLayout {
  uint64_t exact_list = 0, widths = 0, lo = 0, step = 0, outlier_values = 0,
           outlier_index = 0, exact_values = 0, codes = 0, residual = 0, end = 0;
  uint64_t channel_scale = 0, channel_offset = 0;
  bool has_channel_scale = false, has_channel_offset = false;
};

// How the encoder finds group g's error target (qaq): most pages need no
// per-group table (internal::GroupEModel), which saves building and
// uploading one on every encode.
enum EMode : int32_t { kETable = 0, kEScalar = 1, kEPerHead = 2 };
inline constexpr int kMaxPerHeadE = 64;

struct TensorParams {
  Geo geo;
  int32_t outliers = 0;  // k per side
  int32_t index_bytes = 1;
  int32_t variable_widths = 0;
  int32_t fixed_bits = 0;
  int32_t b_min = 0, b_max = 8;
  int32_t e_mode = kETable;
  const float* group_e = nullptr;  // kETable: device, one per group
  float e_scalar = 0;              // kEScalar
  float e_per_head[kMaxPerHeadE] = {};  // kEPerHead: group g has head g % kv_heads
};

// What a section's layout depends on besides its totals.
struct SectionShape {
  int64_t groups = 0;
  int32_t outliers = 0, index_bytes = 1, variable_widths = 0;
  int64_t residual_values = 0;  // kivi: values kept as fp16 after the groups
};

// Region offsets of a section that starts at `base` (page-format.md,
// "Section"): the same sums as SectionSize on the CPU. Host and device use
// this one function, so the page the GPU writes is the layout the host reports.
QAQKV_HD SectionLayout LayoutSection(uint64_t base, const SectionShape& s, const GroupCount& total) {
  const uint64_t G = s.groups, quant = G - total.exact;
  const uint64_t per_group = 2 * uint64_t(s.outliers);
  SectionLayout l;
  uint64_t off = base + 4;
  l.exact_list = off;
  off += 4 * total.exact;
  l.widths = off;
  if (s.variable_widths) off += (G + 1) / 2;
  l.lo = off;
  off += 2 * quant;
  l.step = off;
  off += 2 * quant;
  l.outlier_values = off;
  off += 2 * quant * per_group;
  l.outlier_index = off;
  off += uint64_t(s.index_bytes) * quant * per_group;
  l.exact_values = off;
  off += 2 * total.exact_values;
  l.codes = off;
  off += (total.code_bits + 7) / 8;
  l.residual = off;
  off += 2 * uint64_t(s.residual_values);
  l.end = off;
  return l;
}

// A page the encoder lays out on the device: the sizes of its sections are
// known only after the scans, and waiting for them on the host would leave
// the GPU idle mid-encode. Every kernel that writes the page derives both
// sections' layouts from the scans' totals (DeviceLayout); the host learns
// them with one copy after the last kernel.
struct PageTarget {
  uint8_t* page = nullptr;  // capacity for the worst case
  uint64_t base = 0;        // where the K section starts (after the header)
  uint32_t k_bytes_at = 0, v_bytes_at = 0;  // header fields patched at the end
  SectionShape shape[2];
  const GroupCount* scanned[2] = {nullptr, nullptr};  // inclusive scans
  // 2 zeroed words per section: the partial first and last word of its
  // codes, which share a word with other regions' bytes. Codes are ORed
  // here and merged byte by byte at the end, so no word of the page is both
  // ORed as a word and stored to as bytes by different threads.
  uint32_t* edges = nullptr;
};

// What the host reads back after an encode.
struct EncodeResult {
  GroupCount totals[2];
  unsigned long long bad[2];  // first out-of-range canonical index, or ~0
};

// ---- encoder ----
// Pass 1: per group, finiteness, outliers, range, width, offset and step.
// A finite value beyond fp16's range lowers *bad_index to its canonical index.
cudaError_t LaunchAnalyze(const TensorParams& p, InView in, GroupInfo* info, GroupCount* count,
                          unsigned long long* bad_index, cudaStream_t stream);
// Inclusive scan of counts (CUB). With temp == nullptr, only sets *temp_bytes.
cudaError_t LaunchScan(const GroupCount* in, GroupCount* out, int64_t n, void* temp,
                       size_t* temp_bytes, cudaStream_t stream);
// Zeroes the code words of section `which` that pack ORs into (all but the
// edge words).
cudaError_t LaunchZeroCodes(const PageTarget& t, int which, cudaStream_t stream);
// Pass 2: writes every region of section `which` but its exact count.
cudaError_t LaunchPack(const TensorParams& p, InView in, const GroupInfo* info,
                       const GroupCount* count, const PageTarget& t, int which,
                       cudaStream_t stream);
// Last: merges the edge words, writes the exact counts and the header's
// section sizes, and fills *result (device memory) for the host.
cudaError_t LaunchFinishPage(const PageTarget& t, const unsigned long long* bad,
                             EncodeResult* result, cudaStream_t stream);
// fp16 codec and kivi residual: canonical fp16 values of tokens [t0, tokens)
// (page == nullptr: only the range check; bad_index == nullptr: no check)
// written at page + offset. Also reports out-of-range values (fp16 codec).
cudaError_t LaunchStoreFp16(const Geo& geo, int32_t t0, InView in, uint8_t* page, uint64_t offset,
                            unsigned long long* bad_index, cudaStream_t stream);
// The same into section `which`'s residual region of a device-laid-out page.
cudaError_t LaunchStoreResidual(const Geo& geo, InView in, const PageTarget& t, int which,
                                cudaStream_t stream);
// Copies up to 64 bytes given by value to dst (no host buffer to keep alive).
cudaError_t LaunchWriteBytes(uint8_t* dst, const uint8_t* bytes, int n, cudaStream_t stream);

// ---- decoder ----
cudaError_t LaunchDecodeCount(const TensorParams& p, const uint8_t* page,
                              const SectionLayout& layout, uint64_t n_exact, GroupCount* count,
                              cudaStream_t stream);
// count and scanned may be null for groups of one size with a fixed width
// and no exact group: the offsets follow from the group index.
cudaError_t LaunchDecode(const TensorParams& p, const uint8_t* page, const SectionLayout& layout,
                         uint64_t n_exact, const GroupCount* count, const GroupCount* scanned,
                         OutView out, cudaStream_t stream);
// fp16 values of tokens [t0, tokens) at page + offset into `out`.
cudaError_t LaunchLoadFp16(const Geo& geo, int32_t t0, const uint8_t* page, uint64_t offset,
                           OutView out, cudaStream_t stream);

}  // namespace qaqkv::cuda_internal

#endif  // QAQKV_KERNELS_CUDA_INTERNAL_LAUNCH_H_
