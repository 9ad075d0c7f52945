// The codecs on the GPU: pages encoded from, and decoded into, device memory.
//
// `GpuCodec::EncodePage` writes exactly the bytes of qaqkv::EncodePage
// (kernels/codec.h) for the same input and config, and `Decode` writes exactly
// the values of qaqkv::DecodePage, so pages move freely between CPU and GPU
// workers. Covered: fp16, int8, int4, kivi2 and qaq (head- and layer-level
// groups); input and output in fp16, bf16 or fp32, NHD or HND, or (decode) a
// vLLM paged cache. Decoding also reads qaq-cs / qaq-cc pages; encoding them
// on the GPU is kUnimplemented (encode those on the CPU).
//
// Work goes onto the caller's stream. Encoding lays the page out on the
// device and synchronizes that stream once, at its end (the host reads the
// section sizes back); copying the page to the host synchronizes again;
// decoding only enqueues. Page validation (checksum, header, every section size) runs on the
// host before any byte reaches the device, so a kernel never reads outside a
// page.
//
// Thread-safety: a GpuCodec and a DevicePage are not thread-safe; use one
// codec per stream. Distinct codecs may be used concurrently.
#ifndef QAQKV_KERNELS_CUDA_CODEC_CUDA_H_
#define QAQKV_KERNELS_CUDA_CODEC_CUDA_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/codec.h"

namespace qaqkv::cuda {

// Header and sections of one page in device memory, with where each region
// lies. Made by GpuCodec::EncodeToDevice, GpuCodec::Upload or
// GpuCodec::AdoptDevicePage; reusable, its buffer only grows.
class DevicePage {
 public:
  DevicePage();
  ~DevicePage();
  DevicePage(DevicePage&&) noexcept;
  DevicePage& operator=(DevicePage&&) noexcept;
  DevicePage(const DevicePage&) = delete;
  DevicePage& operator=(const DevicePage&) = delete;

  // Device pointer to the page bytes; valid once the producing call's stream
  // work has completed. Encoded pages hold no checksum on the device.
  const uint8_t* data() const;
  // Bytes of the whole page, checksum included (what Download returns).
  size_t page_bytes() const;
  PageShape shape() const;

  struct State;

 private:
  friend class GpuCodec;
  std::unique_ptr<State> state_;
};

// A vLLM-style paged KV cache of one layer: `data` (device) is
// [num_blocks][block_size][kv_heads][head_dim] of `dtype`.
struct PagedKvCache {
  void* data = nullptr;
  DType dtype = DType::kF16;
  int num_blocks = 0;
  int block_size = 0;
  int kv_heads = 0;
  int head_dim = 0;
};

class GpuCodec {
 public:
  // Binds to `stream` (not owned; 0 is the legacy default stream) on the
  // current device. kFailedPrecondition when there is no CUDA device.
  static absl::StatusOr<std::unique_ptr<GpuCodec>> Create(cudaStream_t stream);
  ~GpuCodec();
  GpuCodec(const GpuCodec&) = delete;
  GpuCodec& operator=(const GpuCodec&) = delete;

  // qaqkv::EncodePage with k.data and v.data in device memory: same errors
  // (kInvalidArgument for bad arguments, non-device pointers and finite
  // values beyond fp16 range), same bytes. Returns after the stream is idle.
  absl::StatusOr<std::vector<uint8_t>> EncodePage(const CodecConfig& config,
                                                  const PageShape& shape, TensorView k,
                                                  TensorView v, const QaqSideInputs& side = {});

  // The device part of EncodePage: header and sections into `page`. The
  // checksum is added by Download. Returns after the stream is idle. `page`'s
  // buffer is grown to the page's worst case first (a little over the fp16
  // size of K and V), since the sizes are known only on the device.
  absl::Status EncodeToDevice(const CodecConfig& config, const PageShape& shape, TensorView k,
                              TensorView v, const QaqSideInputs& side, DevicePage* page);

  // The page on the host, checksum appended: XXH3-64 computed on the host over
  // the bytes just copied back, by the same function the CPU encoder uses.
  absl::StatusOr<std::vector<uint8_t>> Download(const DevicePage& page);

  // Download into caller memory `out` (best pinned, e.g. a PinnedBuffer, so
  // the copy runs at full PCIe speed) instead of a new vector: writes
  // page.page_bytes() bytes, checksum appended, and returns that count.
  // kInvalidArgument when `out` is smaller; kFailedPrecondition for an empty
  // page. Returns after the stream is idle.
  absl::StatusOr<size_t> DownloadTo(const DevicePage& page, std::span<uint8_t> out);

  // Checks a host page exactly as qaqkv::DecodePage does (kDataLoss,
  // kInvalidArgument) and copies it into `page` on the stream.
  absl::Status Upload(std::span<const uint8_t> bytes, DevicePage* page);

  // Takes a page whose `bytes` bytes (checksum included) are already in
  // device memory, e.g. received over NCCL, without a round trip through the
  // host: only the header and each section's group tables (counts, exact
  // group list, widths, offsets, steps, outliers: a few percent of a page)
  // are copied to the host and checked as Upload checks them (kDataLoss for
  // sizes that do not add up, kInvalidArgument for a bad header), then the
  // page is copied device to device into `page`. The checksum is NOT
  // verified: it guards pages at rest in the store, and NCCL is a reliable
  // point-to-point link; it is kept, so Download returns it unchanged.
  // `device_bytes` must be device (or managed) memory whose contents are
  // complete in this codec's stream order (e.g. the NCCL receive was
  // enqueued on the same stream, or the stream waited for its event); the
  // call synchronizes the stream for the host reads, and the caller may
  // reuse `device_bytes` once the stream passes the copy.
  absl::Status AdoptDevicePage(const void* device_bytes, size_t bytes, DevicePage* page);

  // Enqueues decoding of `page` into device tensors of shape.values()
  // elements each. kInvalidArgument when `expected` disagrees with the page
  // or an output is not device memory. Does not synchronize.
  absl::Status Decode(const DevicePage& page, MutableTensorView k, MutableTensorView v,
                      const PageShape* expected = nullptr);

  // Enqueues decoding into paged caches: page token t goes to sequence
  // position first_token + t, i.e. block block_table[pos / block_size], slot
  // pos % block_size. `block_table` is on the host (it is checked, then
  // copied). kInvalidArgument for a cache whose heads or head_dim differ from
  // the page's, a table too short for the page, or a block id outside
  // [0, num_blocks).
  absl::Status DecodePaged(const DevicePage& page, const PagedKvCache& k_cache,
                           const PagedKvCache& v_cache, std::span<const int32_t> block_table,
                           int first_token);

  // Upload + Decode of a page held on the host.
  absl::Status DecodePage(std::span<const uint8_t> bytes, MutableTensorView k,
                          MutableTensorView v, const PageShape* expected = nullptr);

  cudaStream_t stream() const;

  struct Impl;

 private:
  explicit GpuCodec(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qaqkv::cuda

#endif  // QAQKV_KERNELS_CUDA_CODEC_CUDA_H_
