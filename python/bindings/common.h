// What the binding files share: statuses raised as qaqkv.Error subclasses,
// page bytes read from any Python buffer without a copy, and the parsing of
// the small enums the Python layer passes as strings.
//
// Division of work with python/qaqkv/*.py: the Python layer turns numpy
// arrays and torch tensors (CPU or CUDA) into raw pointers plus shape,
// dtype and layout after checking them, and keeps the objects alive during
// the call; these bindings only call the C++ library. Every call that does
// network or codec work releases the GIL.
#ifndef QAQKV_PYTHON_BINDINGS_COMMON_H_
#define QAQKV_PYTHON_BINDINGS_COMMON_H_

#include <pybind11/pybind11.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/codec.h"

namespace qaqkv::python {

namespace py = pybind11;

// Raises the qaqkv.errors class of `status`'s code with its message (the
// GIL must be held). Never returns.
[[noreturn]] void ThrowStatus(const absl::Status& status);

inline void Check(const absl::Status& status) {
  if (!status.ok()) ThrowStatus(status);
}

template <typename T>
T Unwrap(absl::StatusOr<T> value) {
  if (!value.ok()) ThrowStatus(value.status());
  return std::move(*value);
}

// A read-only view of a bytes-like object (bytes, bytearray, memoryview of
// contiguous bytes, a uint8 numpy array), valid while `owner` lives.
class ByteView {
 public:
  explicit ByteView(const py::object& owner);
  ~ByteView();
  ByteView(const ByteView&) = delete;
  ByteView& operator=(const ByteView&) = delete;

  std::span<const uint8_t> bytes() const { return bytes_; }
  std::string_view view() const {
    return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()};
  }

 private:
  Py_buffer buffer_{};
  std::span<const uint8_t> bytes_;
};

// "fp16" | "bf16" | "fp32"; kInvalidArgument naming `field` otherwise.
absl::StatusOr<DType> ParseDType(std::string_view name, std::string_view field);
// "NHD" | "HND".
absl::StatusOr<Layout> ParseLayout(std::string_view name, std::string_view field);
std::string_view DTypeName(DType dtype);

// A pointer passed from Python as an integer (numpy's ctypes.data, torch's
// data_ptr()).
inline void* AsPointer(uintptr_t address) { return reinterpret_cast<void*>(address); }

void RegisterCodec(py::module_& m);
void RegisterClient(py::module_& m);
// CUDA builds only (device.cc).
void RegisterDevice(py::module_& m);

}  // namespace qaqkv::python

#endif  // QAQKV_PYTHON_BINDINGS_COMMON_H_
