"""numpy arrays and torch tensors as the addresses the native module takes.

A KV buffer is one layer's K (or V): ``[tokens, kv_heads, head_dim]`` in the
NHD layout or ``[kv_heads, tokens, head_dim]`` in HND, of fp16, bf16 or fp32.
numpy has no bfloat16: pass bf16 as a torch tensor, or as a uint16/int16
numpy array of the raw bits with ``dtype="bf16"``.

Inputs are read in place when they are C-contiguous (a copy is made
otherwise); outputs must be writable and C-contiguous, since the decoded
values go straight into them. torch CUDA tensors, and any GPU array with
``__cuda_array_interface__`` (CuPy, Numba, ...), pass as device addresses,
which the client's device path (CUDA builds) encodes and decodes on the GPU.
torch is imported only when a tensor is passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from qaqkv import _qaqkv
from qaqkv.errors import InvalidArgument

_NUMPY_DTYPES = {np.dtype(np.float16): "fp16", np.dtype(np.float32): "fp32"}
_BITS16 = (np.dtype(np.uint16), np.dtype(np.int16))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _torch_dtype_name(t: Any) -> Optional[str]:
    import torch

    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(t.dtype)


@dataclass
class Buffer:
    """One contiguous buffer: its address, shape, dtype name and device."""

    address: int
    shape: tuple[int, ...]
    dtype: str
    device: str  # "cpu" or "cuda:N"
    keep: Any = field(repr=False)  # the object that owns the memory


_CAI_DTYPES = {"<f2": "fp16", "<f4": "fp32"}


def _cuda_buffer(x: Any, cai: dict, name: str, writable: bool, dtype: Optional[str]) -> Buffer:
    """A GPU array through __cuda_array_interface__ (contiguous only)."""
    if not _qaqkv._has_cuda:
        raise InvalidArgument(f"{name}: a CUDA array, but this qaqkv was built without CUDA")
    typestr = cai["typestr"]
    if typestr in ("<u2", "<i2"):
        if dtype != "bf16":
            raise InvalidArgument(f"{name}: a {typestr} array holds bf16 bits only with "
                                  "dtype='bf16'")
        found = "bf16"
    else:
        found = _CAI_DTYPES.get(typestr)
        if found is None:
            raise InvalidArgument(f"{name}: CUDA array typestr {typestr} is not <f2 or <f4")
        if dtype is not None and dtype != found:
            raise InvalidArgument(f"{name}: dtype {found}, expected {dtype}")
    shape = tuple(int(n) for n in cai["shape"])
    strides = cai.get("strides")
    item = 4 if found == "fp32" else 2
    if strides is not None:
        want = tuple(int(np.prod(shape[i + 1:])) * item for i in range(len(shape)))
        if tuple(strides) != want:
            raise InvalidArgument(f"{name}: the CUDA array must be C-contiguous")
    address, readonly = cai["data"]
    if writable and readonly:
        raise InvalidArgument(f"{name}: the output CUDA array is read-only")
    return Buffer(int(address), shape, found, "cuda", x)


def buffer(x: Any, name: str, *, writable: bool = False, dtype: Optional[str] = None) -> Buffer:
    """`x` as a Buffer; InvalidArgument naming `name` when it cannot be one."""
    cai = None if _is_torch(x) else getattr(x, "__cuda_array_interface__", None)
    if cai is not None:
        return _cuda_buffer(x, cai, name, writable, dtype)
    if _is_torch(x):
        found = _torch_dtype_name(x)
        if found is None:
            raise InvalidArgument(f"{name}: torch dtype {x.dtype} is not float16, bfloat16 or float32")
        if dtype is not None and dtype != found:
            raise InvalidArgument(f"{name}: dtype {found}, expected {dtype}")
        if not x.is_contiguous():
            if writable:
                raise InvalidArgument(f"{name}: the output tensor must be contiguous")
            x = x.contiguous()
        if writable and x.requires_grad:
            raise InvalidArgument(f"{name}: the output tensor requires grad")
        device = "cpu" if x.device.type == "cpu" else str(x.device)
        if x.device.type not in ("cpu", "cuda"):
            raise InvalidArgument(f"{name}: tensors on {x.device} are not supported")
        if x.device.type == "cuda" and not _qaqkv._has_cuda:
            raise InvalidArgument(f"{name}: a CUDA tensor, but this qaqkv was built without "
                                  "CUDA (copy it to the CPU, or build with CUDA)")
        return Buffer(x.data_ptr(), tuple(x.shape), found, device, x)
    if not isinstance(x, np.ndarray):
        if writable:
            raise InvalidArgument(f"{name}: expected a numpy array or a torch tensor, got "
                                  f"{type(x).__name__}")
        x = np.asarray(x)
    if x.dtype in _BITS16:
        if dtype != "bf16":
            raise InvalidArgument(f"{name}: a {x.dtype} array holds bf16 bits only with "
                                  "dtype='bf16'")
        found = "bf16"
    else:
        found = _NUMPY_DTYPES.get(x.dtype)
        if found is None:
            raise InvalidArgument(f"{name}: numpy dtype {x.dtype} is not float16 or float32 "
                                  "(bf16: a torch tensor, or uint16 bits with dtype='bf16')")
        if dtype is not None and dtype != found:
            raise InvalidArgument(f"{name}: dtype {found}, expected {dtype}")
    if not x.flags.c_contiguous:
        if writable:
            raise InvalidArgument(f"{name}: the output array must be C-contiguous")
        x = np.ascontiguousarray(x)
    if writable and not x.flags.writeable:
        raise InvalidArgument(f"{name}: the output array is read-only")
    return Buffer(x.ctypes.data, tuple(x.shape), found, "cpu", x)


@dataclass
class KvBuffers:
    """Per-layer K and V buffers that share one shape, dtype and device."""

    k: list[Buffer]
    v: list[Buffer]
    dtype: str
    layout: str
    tokens: int  # token extent of each buffer
    kv_heads: int
    head_dim: int
    device: str


def _layers(x: Any, name: str, writable: bool, dtype: Optional[str]) -> list[Buffer]:
    if isinstance(x, (list, tuple)):
        return [buffer(t, f"{name}[{i}]", writable=writable, dtype=dtype) for i, t in enumerate(x)]
    whole = buffer(x, name, writable=writable, dtype=dtype)
    if len(whole.shape) != 4:
        raise InvalidArgument(f"{name}: expected a list of per-layer [tokens, heads, dim] "
                              f"buffers or one [layers, ...] buffer, got shape {whole.shape}")
    item = 4 if whole.dtype == "fp32" else 2
    per_layer = int(np.prod(whole.shape[1:])) * item
    return [Buffer(whole.address + i * per_layer, whole.shape[1:], whole.dtype, whole.device,
                   whole.keep) for i in range(whole.shape[0])]


def kv_buffers(k: Any, v: Any, layout: str, *, writable: bool = False,
               dtype: Optional[str] = None) -> KvBuffers:
    """Checks and converts the K and V arguments of a client call."""
    if layout not in ("NHD", "HND"):
        raise InvalidArgument(f"layout: \"{layout}\" is not NHD or HND")
    ks = _layers(k, "k", writable, dtype)
    vs = _layers(v, "v", writable, dtype)
    if len(ks) != len(vs):
        raise InvalidArgument(f"v: {len(vs)} layers, but k has {len(ks)}")
    if not ks:
        raise InvalidArgument("k: no layers")
    first = ks[0]
    for i, b in enumerate(ks + vs):
        which = f"k[{i}]" if i < len(ks) else f"v[{i - len(ks)}]"
        if len(b.shape) != 3:
            raise InvalidArgument(f"{which}: expected 3 dimensions ({layout}), got shape {b.shape}")
        if b.shape != first.shape:
            raise InvalidArgument(f"{which}: shape {b.shape}, but k[0] has {first.shape}")
        if b.dtype != first.dtype:
            raise InvalidArgument(f"{which}: dtype {b.dtype}, but k[0] is {first.dtype}")
        if b.device != first.device:
            raise InvalidArgument(f"{which}: on {b.device}, but k[0] is on {first.device}")
    if layout == "NHD":
        tokens, heads, dim = first.shape
    else:
        heads, tokens, dim = first.shape
    return KvBuffers(ks, vs, first.dtype, layout, tokens, heads, dim, first.device)


def side_inputs(values: Optional[Sequence[Any]], name: str, layers: int) -> list:
    """Per-layer float32 side inputs (None entries allowed), or []."""
    if values is None:
        return []
    if len(values) != layers:
        raise InvalidArgument(f"{name}: {len(values)} entries, one per layer expected ({layers})")
    return [None if a is None else float32(a).reshape(-1) for a in values]


def float32(x: Any) -> np.ndarray:
    """`x` (numpy, a sequence, or a torch tensor on any device) as a
    C-contiguous float32 numpy array, for QAQ's side inputs and their math."""
    if _is_torch(x):
        x = x.detach().to("cpu").float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
