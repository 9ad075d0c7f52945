#include "kernels/cuda/cuda_raii.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace qaqkv::cuda {

absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string msg =
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
  switch (err) {
    case cudaErrorMemoryAllocation: return absl::ResourceExhaustedError(msg);
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidConfiguration: return absl::InvalidArgumentError(msg);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice: return absl::FailedPreconditionError(msg);
    default: return absl::InternalError(msg);
  }
}

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

DeviceBuffer::~DeviceBuffer() { Reset(); }

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void DeviceBuffer::Reset() {
  // cudaFree synchronizes the device, so pending work on the buffer finishes
  // first; an error here cannot be reported from a destructor.
  if (data_ != nullptr) (void)cudaFree(data_);
  data_ = nullptr;
  size_ = 0;
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer b;
  QAQKV_RETURN_IF_ERROR(b.Grow(bytes));
  return b;
}

absl::Status DeviceBuffer::Grow(size_t bytes) {
  if (bytes <= size_ && data_ != nullptr) return absl::OkStatus();
  Reset();
  QAQKV_RETURN_IF_CUDA_ERROR(cudaMalloc(&data_, bytes == 0 ? 1 : bytes));
  size_ = bytes;
  return absl::OkStatus();
}

PinnedBuffer::~PinnedBuffer() { Reset(); }

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void PinnedBuffer::Reset() {
  if (data_ != nullptr) (void)cudaFreeHost(data_);
  data_ = nullptr;
  size_ = 0;
}

absl::Status PinnedBuffer::Grow(size_t bytes) {
  if (bytes <= size_ && data_ != nullptr) return absl::OkStatus();
  Reset();
  QAQKV_RETURN_IF_CUDA_ERROR(cudaMallocHost(&data_, bytes == 0 ? 1 : bytes));
  size_ = bytes;
  return absl::OkStatus();
}

CudaStream::~CudaStream() {
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

CudaStream& CudaStream::operator=(CudaStream&& o) noexcept {
  if (this != &o) {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    stream_ = std::exchange(o.stream_, nullptr);
  }
  return *this;
}

absl::StatusOr<CudaStream> CudaStream::Create() {
  CudaStream s;
  QAQKV_RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&s.stream_, cudaStreamNonBlocking));
  return s;
}

absl::Status CudaStream::Synchronize() const {
  QAQKV_RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

CudaEvent::~CudaEvent() {
  if (event_ != nullptr) (void)cudaEventDestroy(event_);
}

CudaEvent& CudaEvent::operator=(CudaEvent&& o) noexcept {
  if (this != &o) {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
    event_ = std::exchange(o.event_, nullptr);
  }
  return *this;
}

absl::StatusOr<CudaEvent> CudaEvent::Create(bool timing) {
  CudaEvent e;
  QAQKV_RETURN_IF_CUDA_ERROR(
      cudaEventCreateWithFlags(&e.event_, timing ? cudaEventDefault : cudaEventDisableTiming));
  return e;
}

absl::Status CudaEvent::Record(cudaStream_t stream) const {
  QAQKV_RETURN_IF_CUDA_ERROR(cudaEventRecord(event_, stream));
  return absl::OkStatus();
}

absl::Status CudaEvent::Synchronize() const {
  QAQKV_RETURN_IF_CUDA_ERROR(cudaEventSynchronize(event_));
  return absl::OkStatus();
}

absl::StatusOr<float> CudaEvent::ElapsedMs(const CudaEvent& start, const CudaEvent& stop) {
  float ms = 0;
  QAQKV_RETURN_IF_CUDA_ERROR(cudaEventElapsedTime(&ms, start.event_, stop.event_));
  return ms;
}

}  // namespace qaqkv::cuda
