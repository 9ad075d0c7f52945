"""A small safetensors reader (and writer) that needs numpy only.

The format: an 8-byte little-endian unsigned header length ``n``, then ``n`` bytes of
JSON, then the raw little-endian tensor data. The JSON maps each tensor name to
``{"dtype": ..., "shape": [...], "data_offsets": [begin, end]}`` with offsets relative to
the start of the data; the optional ``"__metadata__"`` entry maps strings to strings.

Supported dtypes: F16, BF16 (returned as float32, since numpy has no bfloat16), F32, F64,
I32, I64 and U8. Every problem with a file is reported as a ``ValueError`` that names the
file and, where it concerns one tensor, the tensor.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

#: safetensors dtype name -> little-endian numpy dtype of the stored elements.
DTYPES: Dict[str, np.dtype] = {
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to float32 on load
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),
}

# Refuse absurd header lengths before reading them (the format's own limit is 100 MB).
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def load(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read a safetensors file.

    Returns ``(tensors, metadata)``: ``tensors`` maps each name to a writable, native-endian
    numpy array of the stored shape (BF16 is widened to float32), and ``metadata`` is the
    header's ``__metadata__`` (empty when absent). Raises ``ValueError`` naming the file (and
    the tensor) on a malformed file: short file, bad header length, invalid JSON, unknown
    dtype, bad shape, offsets outside the data, or a byte size that does not match the shape.
    """
    name = os.fspath(path)
    with open(name, "rb") as f:
        raw = f.read()
    return loads(raw, name=name)


def loads(raw: bytes, name: str = "<bytes>") -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Parse safetensors content already in memory; ``name`` is used in error messages."""

    def fail(msg: str) -> ValueError:
        return ValueError(f"{name}: malformed safetensors file: {msg}")

    if len(raw) < 8:
        raise fail(f"file is {len(raw)} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n == 0 or n > _MAX_HEADER_BYTES or 8 + n > len(raw):
        raise fail(f"header length {n} does not fit in a file of {len(raw)} bytes")
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(f"header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise fail("header is not a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise fail("__metadata__ must map strings to strings")

    data = memoryview(raw)[8 + n :]
    tensors: Dict[str, np.ndarray] = {}
    for tname, info in header.items():
        where = f"tensor {tname!r}"
        if not isinstance(info, dict):
            raise fail(f"{where}: entry is not a JSON object")
        dtype_name = info.get("dtype")
        if dtype_name not in DTYPES:
            raise fail(f"{where}: unknown dtype {dtype_name!r} (supported: {', '.join(DTYPES)})")
        dt = DTYPES[dtype_name]
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise fail(f"{where}: shape {shape!r} is not a list of non-negative integers")
        offs = info.get("data_offsets")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
        ):
            raise fail(f"{where}: data_offsets {offs!r} is not a pair of integers")
        begin, end = offs
        if not 0 <= begin <= end <= len(data):
            raise fail(
                f"{where}: data_offsets [{begin}, {end}] lie outside the data section "
                f"of {len(data)} bytes"
            )
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dt.itemsize != end - begin:
            raise fail(
                f"{where}: shape {shape} of {dtype_name} needs {count * dt.itemsize} bytes "
                f"but data_offsets span {end - begin}"
            )
        arr = np.frombuffer(data[begin:end], dtype=dt).reshape(shape)
        if dtype_name == "BF16":
            arr = _bf16_to_f32(arr)
        else:
            arr = arr.astype(dt.newbyteorder("="), copy=True)
        tensors[tname] = arr
    return tensors, dict(metadata)


_NP_TO_ST: Dict[np.dtype, str] = {
    np.dtype("float16"): "F16",
    np.dtype("float32"): "F32",
    np.dtype("float64"): "F64",
    np.dtype("int32"): "I32",
    np.dtype("int64"): "I64",
    np.dtype("uint8"): "U8",
}


def dumps(tensors: Mapping[str, np.ndarray], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """Serialize numpy arrays (F16/F32/F64/I32/I64/U8) and string metadata to safetensors bytes."""
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    offset = 0
    for tname, arr in tensors.items():
        a = np.asarray(arr)
        if a.dtype.newbyteorder("=") not in _NP_TO_ST:
            raise ValueError(f"tensor {tname!r}: dtype {a.dtype} cannot be written")
        st = _NP_TO_ST[a.dtype.newbyteorder("=")]
        b = np.ascontiguousarray(a, dtype=DTYPES[st]).tobytes()
        header[tname] = {"dtype": st, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * (-len(hj) % 8)
    return struct.pack("<Q", len(hj)) + hj + b"".join(chunks)


def save(
    path: PathLike, tensors: Mapping[str, np.ndarray], metadata: Optional[Mapping[str, str]] = None
) -> None:
    """Write numpy arrays and string metadata to a safetensors file (see :func:`dumps`)."""
    with open(os.fspath(path), "wb") as f:
        f.write(dumps(tensors, metadata))
