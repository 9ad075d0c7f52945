"""GPU buffers through the client's device path (ctest label gpu): pages
encoded on the GPU must be the CPU encoder's bytes, and loads into device
memory must match loads into host memory. The buffers are raw CUDA memory
(qaqkv._qaqkv._DeviceBuffer) behind __cuda_array_interface__, the protocol
torch, CuPy and Numba arrays share, so no CUDA build of torch is needed.
Skips without a CUDA build and a device."""

from __future__ import annotations

import numpy as np
import pytest

import qaqkv
from qaqkv import _qaqkv

if not _qaqkv._has_cuda or _qaqkv._cuda_device_count() == 0:
    pytest.skip("needs a CUDA build and a CUDA device", allow_module_level=True)

L, H, QH, D, BT = 4, 2, 8, 128, 64


class CudaArray:
    """A C-contiguous GPU array of a numpy dtype."""

    def __init__(self, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        self.shape, self.dtype = host.shape, host.dtype
        self.memory = _qaqkv._DeviceBuffer(host.nbytes)
        self.memory.upload(host.tobytes())

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.memory.address, False),
                "strides": None, "version": 3}

    def host(self) -> np.ndarray:
        return np.frombuffer(self.memory.download(), self.dtype).reshape(self.shape)


def geometry() -> qaqkv.Geometry:
    return qaqkv.Geometry(num_layers=L, num_kv_heads=H, num_q_heads=QH, head_dim=D,
                          dtype="fp16", block_tokens=BT)


@pytest.fixture(scope="module")
def client(server) -> qaqkv.Client:
    with qaqkv.Client(server.target) as c:
        yield c


@pytest.mark.parametrize("codec", ["fp16", "int4", "qaq"])
def test_device_buffers_round_trip_and_write_the_cpu_encoders_pages(client: qaqkv.Client,
                                                                    codec: str) -> None:
    rng = np.random.default_rng(len(codec))
    k = rng.standard_normal((L, 4 * BT, H, D)).astype(np.float16)
    v = rng.standard_normal((L, 4 * BT, H, D)).astype(np.float16)
    keys = qaqkv.block_keys(f"gpu-{codec}", codec, np.arange(4 * BT), BT)
    client.offload(geometry(), keys, CudaArray(k), CudaArray(v), codec=codec)
    _, pages = client.get_pages(keys)
    assert len(pages) == 4 * L
    for block, layer, page in pages:
        b = keys.index(block)
        rows = slice(b * BT, (b + 1) * BT)
        assert page == qaqkv.encode(k[layer, rows], v[layer, rows], codec), (b, layer)
    out_k, out_v = CudaArray(np.zeros_like(k)), CudaArray(np.zeros_like(v))
    assert list(client.load_layers(geometry(), keys, out_k, out_v)) == list(range(L))
    host_k, host_v = np.zeros_like(k), np.zeros_like(v)
    client.load(geometry(), keys, host_k, host_v)
    assert np.array_equal(out_k.host(), host_k) and np.array_equal(out_v.host(), host_v)
    if codec == "fp16":
        assert np.array_equal(host_k, k) and np.array_equal(host_v, v)


def test_device_buffers_are_refused_by_the_session_calls(client: qaqkv.Client) -> None:
    kv = CudaArray(np.zeros((L, BT + 3, H, D), np.float16))
    keys = qaqkv.block_keys("gpu-session", "fp16", np.arange(BT + 3), BT)
    with pytest.raises(qaqkv.InvalidArgument):
        client.offload_session("gpu-s", geometry(), keys, BT + 3, kv, kv, codec="fp16")
