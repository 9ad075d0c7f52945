#include "python/bindings/common.h"

#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace qaqkv::python {

void ThrowStatus(const absl::Status& status) {
  // The classes live in Python (qaqkv/errors.py) so that they can also
  // derive from ValueError, TimeoutError, ...; looked up per error, which
  // is cheap next to what failed.
  py::object cls = py::module_::import("qaqkv.errors")
                       .attr("error_class")(absl::StatusCodeToString(status.code()));
  py::object error = cls(std::string(status.message()));
  PyErr_SetObject(cls.ptr(), error.ptr());
  throw py::error_already_set();
}

ByteView::ByteView(const py::object& owner) {
  if (PyObject_GetBuffer(owner.ptr(), &buffer_, PyBUF_C_CONTIGUOUS) != 0) {
    PyErr_Clear();
    ThrowStatus(absl::InvalidArgumentError(
        absl::StrCat("page: expected bytes, bytearray or a contiguous buffer, got ",
                     std::string(py::str(py::type::of(owner).attr("__name__"))))));
  }
  bytes_ = {static_cast<const uint8_t*>(buffer_.buf), static_cast<size_t>(buffer_.len)};
}

ByteView::~ByteView() { PyBuffer_Release(&buffer_); }

absl::StatusOr<DType> ParseDType(std::string_view name, std::string_view field) {
  if (name == "fp16" || name == "float16") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "fp32" || name == "float32") return DType::kF32;
  return absl::InvalidArgumentError(
      absl::StrCat(base::AsAbsl(field), ": \"", base::AsAbsl(name), "\" is not fp16, bf16 or fp32"));
}

absl::StatusOr<Layout> ParseLayout(std::string_view name, std::string_view field) {
  if (name == "NHD") return Layout::kNHD;
  if (name == "HND") return Layout::kHND;
  return absl::InvalidArgumentError(absl::StrCat(base::AsAbsl(field), ": \"", base::AsAbsl(name), "\" is not NHD or HND"));
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF16: return "fp16";
    case DType::kBF16: return "bf16";
    case DType::kF32: return "fp32";
  }
  return "?";
}

}  // namespace qaqkv::python
