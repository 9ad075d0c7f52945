// The client's device path: Offload from, and Load into, KV buffers in GPU
// memory (HostKv / MutableHostKv pointers that cudaPointerGetAttributes
// reports as device or managed memory).
//
// Compiled only when QAQKV_ENABLE_CUDA is on (client/internal/device_kv.cc
// links qaqkv::kernels_cuda); transfer.cc calls it under the compile
// definition QAQKV_HAVE_CUDA. Without CUDA nothing detects a device pointer:
// every pointer is taken as host memory, so device buffers must not be
// passed to a client built without CUDA.
//
// Offload encodes each page on the GPU (kernels/cuda GpuCodec: the CPU
// encoder's bytes) into pinned host buffers that go onto the PutPages stream
// without another copy. qaq-cs / qaq-cc cannot be encoded on the GPU
// (kUnimplemented there): for those the block is copied to pinned host
// memory and encoded by the CPU encoder, page by page.
//
// Load copies each received page to the GPU on one stream while the
// previous page decodes on another (two page buffers), decoding straight
// into the caller's buffers (through a contiguous scratch for HND buffers
// whose token extent exceeds a block). on_layer(l) is called from an
// internal thread once the decode stream has passed the last page of layer
// l, i.e. layer l is in the caller's buffers.
//
// Not thread-safe: each object serves one call. Private to client/.
#ifndef QAQKV_CLIENT_INTERNAL_DEVICE_KV_H_
#define QAQKV_CLIENT_INTERNAL_DEVICE_KV_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/internal/client_impl.h"
#include "client/internal/host_kv.h"
#include "kernels/codec.h"
#include "qaqkv/client.h"

namespace qaqkv::client::internal {

// Where the K and V buffers of layers [layer_begin, layer_end) live.
struct KvPlacement {
  bool on_device = false;
  int device = -1;  // CUDA ordinal when on_device
};

// Host (ordinary, pinned or registered memory, or no CUDA device in the
// machine: then no CUDA call is made beyond counting devices) or device
// (device or managed memory). kInvalidArgument, naming `field`, when host
// and device pointers are mixed or device pointers lie on several GPUs.
// The first call on a machine with a GPU initializes the CUDA runtime.
absl::StatusOr<KvPlacement> LocateKv(const KvBuffers& kv, int layer_begin, int layer_end,
                                     std::string_view field);

// Offload's pages from device buffers, in the order EncodeSource (transfer.cc)
// gives: block-major, encoded ahead of the stream by an internal thread.
class DevicePageSource : public PageSource {
 public:
  // Time spent encoding (GPU encode plus the copy back), summed.
  virtual absl::Duration encode_time() = 0;
};

// `request` (validated, kv on `device`) must outlive the source.
// kFailedPrecondition / kResourceExhausted when CUDA resources cannot be
// had.
absl::StatusOr<std::unique_ptr<DevicePageSource>> MakeDeviceEncodeSource(
    const OffloadRequest& request, const ::qaqkv::CodecConfig& config, int64_t buffer_tokens,
    size_t max_page, int device);

// Load's decoder into device buffers. Page() is called for each page in
// arrival order (never concurrently), then Finish() once.
class DeviceLoader {
 public:
  virtual ~DeviceLoader() = default;
  // Checks the page (kDataLoss for one that does not decode) and enqueues
  // its copy and decode; `data` is copied before it returns.
  virtual absl::Status Page(size_t block, int layer, std::string_view data) = 0;
  // Waits until every enqueued page is decoded and the layers complete by
  // then are reported (none when `stream_ok` is false), and stops the
  // notifier: no on_layer call after it returns. Returns a CUDA error met
  // while decoding.
  virtual absl::Status Finish(bool stream_ok) = 0;
  virtual absl::Duration time_to_first_layer() = 0;
};

// `request` (validated, kv on `device`) must outlive the loader.
absl::StatusOr<std::unique_ptr<DeviceLoader>> MakeDeviceLoader(const LoadRequest& request,
                                                               int layer_end,
                                                               int64_t buffer_tokens, int device,
                                                               absl::Time start);

}  // namespace qaqkv::client::internal

#endif  // QAQKV_CLIENT_INTERNAL_DEVICE_KV_H_
