// Owning handles for CUDA resources, and the one place where cudaError_t
// becomes absl::Status. Every handle is move-only and frees its resource in
// its destructor; none of them is thread-safe.
#ifndef QAQKV_KERNELS_CUDA_CUDA_RAII_H_
#define QAQKV_KERNELS_CUDA_CUDA_RAII_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qaqkv::cuda {

// OK for cudaSuccess; otherwise kResourceExhausted for an allocation failure,
// kInvalidArgument for a bad value or pointer, kFailedPrecondition when there
// is no usable device, kInternal for anything else. `what` names the call.
absl::Status CudaStatus(cudaError_t err, const char* what);

// Returns CudaStatus(err, "<expr as written>") when `expr`, a cudaError_t, is
// not cudaSuccess: where a CUDA error becomes a Status. Not a status macro:
// an absl::Status is returned with QAQKV_RETURN_IF_ERROR (base/status_macros.h).
#define QAQKV_RETURN_IF_CUDA_ERROR(expr)                                    \
  do {                                                                      \
    if (const cudaError_t qaqkv_cuda_err_ = (expr); qaqkv_cuda_err_ != cudaSuccess) \
      return ::qaqkv::cuda::CudaStatus(qaqkv_cuda_err_, #expr);             \
  } while (0)

// Number of CUDA devices; 0 (not an error) when there is no driver or GPU.
int DeviceCount();

// Device memory (cudaMalloc). Grow() keeps the buffer when it is big enough,
// so a buffer reused across calls allocates only until it reaches its peak.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  // Makes size() >= bytes; old contents are lost when it reallocates.
  absl::Status Grow(size_t bytes);
  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t size() const { return size_; }

 private:
  void Reset();
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Page-locked host memory (cudaMallocHost): what async copies need to be
// truly asynchronous.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept { *this = std::move(o); }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  absl::Status Grow(size_t bytes);
  uint8_t* data() const { return static_cast<uint8_t*>(data_); }
  size_t size() const { return size_; }

 private:
  void Reset();
  void* data_ = nullptr;
  size_t size_ = 0;
};

// A non-blocking stream.
class CudaStream {
 public:
  CudaStream() = default;
  ~CudaStream();
  CudaStream(CudaStream&& o) noexcept : stream_(std::exchange(o.stream_, nullptr)) {}
  CudaStream& operator=(CudaStream&& o) noexcept;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  static absl::StatusOr<CudaStream> Create();
  cudaStream_t get() const { return stream_; }
  absl::Status Synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

class CudaEvent {
 public:
  CudaEvent() = default;
  ~CudaEvent();
  CudaEvent(CudaEvent&& o) noexcept : event_(std::exchange(o.event_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&& o) noexcept;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  // `timing` false makes a lighter event for synchronization only.
  static absl::StatusOr<CudaEvent> Create(bool timing = true);
  cudaEvent_t get() const { return event_; }
  absl::Status Record(cudaStream_t stream) const;
  absl::Status Synchronize() const;
  // Milliseconds between two recorded, completed timing events.
  static absl::StatusOr<float> ElapsedMs(const CudaEvent& start, const CudaEvent& stop);

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace qaqkv::cuda

#endif  // QAQKV_KERNELS_CUDA_CUDA_RAII_H_
