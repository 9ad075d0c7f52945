// _DeviceBuffer: GPU memory for the gpu-labelled Python tests, which must
// exercise the client's device path without a CUDA build of torch (Debian's
// has none). The tests wrap it in an object with __cuda_array_interface__,
// the protocol qaqkv accepts from any GPU array library. CUDA builds only.
#include <cuda_runtime.h>

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "python/bindings/common.h"

namespace qaqkv::python {
namespace {

void CheckCuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    ThrowStatus(absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e))));
  }
}

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    CheckCuda(cudaMalloc(&data_, bytes == 0 ? 1 : bytes), "cudaMalloc");
  }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  uintptr_t address() const { return reinterpret_cast<uintptr_t>(data_); }
  size_t size() const { return bytes_; }

  void Upload(const py::object& host) {
    ByteView bytes(host);
    if (bytes.bytes().size() != bytes_) {
      ThrowStatus(absl::InvalidArgumentError(
          absl::StrCat("host: ", bytes.bytes().size(), " bytes, the buffer has ", bytes_)));
    }
    CheckCuda(cudaMemcpy(data_, bytes.bytes().data(), bytes_, cudaMemcpyHostToDevice),
              "cudaMemcpy to the device");
  }
  py::bytes Download() const {
    std::string out(bytes_, '\0');
    CheckCuda(cudaMemcpy(out.data(), data_, bytes_, cudaMemcpyDeviceToHost),
              "cudaMemcpy from the device");
    return py::bytes(out);
  }

 private:
  void* data_ = nullptr;
  size_t bytes_;
};

}  // namespace

void RegisterDevice(py::module_& m) {
  py::class_<DeviceBuffer>(m, "_DeviceBuffer")
      .def(py::init<size_t>(), py::arg("bytes"))
      .def_property_readonly("address", &DeviceBuffer::address)
      .def_property_readonly("size", &DeviceBuffer::size)
      .def("upload", &DeviceBuffer::Upload, py::arg("host"))
      .def("download", &DeviceBuffer::Download);
  m.def("_cuda_device_count", [] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  });
}

}  // namespace qaqkv::python
