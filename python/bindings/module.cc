// qaqkv._qaqkv: the native half of the Python package. Users import
// `qaqkv`, whose Python files (python/qaqkv/) wrap these functions with
// array handling, docstrings and types.
#include "python/bindings/common.h"

PYBIND11_MODULE(_qaqkv, m) {
  m.doc() = "Native bindings of qaqkv (use the `qaqkv` package, not this module).";
#ifdef QAQKV_HAVE_CUDA
  m.attr("_has_cuda") = true;
  qaqkv::python::RegisterDevice(m);
#else
  m.attr("_has_cuda") = false;
#endif
  qaqkv::python::RegisterCodec(m);
  qaqkv::python::RegisterClient(m);
}
