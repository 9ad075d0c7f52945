"""qaqkv's local codec functions against the C++ codec, and QAQ's side-input
helpers against a NumPy statement of the same math."""

from __future__ import annotations

import math

import numpy as np
import pytest

import qaqkv


def kv(tokens: int = 64, heads: int = 2, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((tokens, heads, dim)).astype(np.float32)
    k[:, :, 3] += 8.0  # an outlier channel, as real keys have
    v = rng.standard_normal((tokens, heads, dim)).astype(np.float32)
    return k, v


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_fp16_round_trip_is_bit_exact_and_counted() -> None:
    k, v = kv()
    k16, v16 = k.astype(np.float16), v.astype(np.float16)
    page = qaqkv.encode(k16, v16, "fp16")
    info = qaqkv.inspect(page)
    assert (info.codec, info.tokens, info.kv_heads, info.head_dim) == ("fp16", 64, 2, 64)
    assert info.encoded_bytes == len(page)
    dk, dv = qaqkv.decode(page, dtype="fp16")
    assert dk.dtype == np.float16 and dk.shape == (64, 2, 64)
    assert np.array_equal(dk.view(np.uint16), k16.view(np.uint16))
    assert np.array_equal(dv.view(np.uint16), v16.view(np.uint16))
    stats = qaqkv.page_stats(page)
    assert stats.values == 2 * 64 * 2 * 64
    assert stats.encoded_bytes == len(page)
    assert stats.ratio == pytest.approx(stats.values * 2 / len(page))
    assert stats.ratio < 1.0  # a copy plus its header and checksum


@pytest.mark.parametrize("codec, max_err", [("int8", 0.01), ("int4", 0.15), ("qaq", 0.2),
                                            ("kivi2", 0.5)])
def test_lossy_codecs_compress_within_their_error(codec: str, max_err: float) -> None:
    k, v = kv(tokens=256)
    page = qaqkv.encode(k, v, codec)
    dk, dv = qaqkv.decode(page)
    assert rel_err(dk, k) < max_err and rel_err(dv, v) < max_err
    assert qaqkv.page_stats(page).ratio > 1.5
    assert qaqkv.verify(page, codec).codec == qaqkv.inspect(page).codec


def test_hnd_layout_is_the_transpose_of_nhd() -> None:
    k, v = kv()
    nhd = qaqkv.encode(k, v, "int8")
    hnd = qaqkv.encode(np.ascontiguousarray(k.transpose(1, 0, 2)),
                       np.ascontiguousarray(v.transpose(1, 0, 2)), "int8", layout="HND")
    assert nhd == hnd
    dk, _ = qaqkv.decode(nhd, layout="HND")
    assert dk.shape == (2, 64, 64)
    assert np.array_equal(dk, qaqkv.decode(nhd)[0].transpose(1, 0, 2))


def test_non_contiguous_input_is_read_through_a_copy() -> None:
    k, v = kv()
    wide_k = np.zeros((64, 2, 128), np.float32)
    wide_k[:, :, ::2] = k
    assert qaqkv.encode(wide_k[:, :, ::2], v, "int8") == qaqkv.encode(k, v, "int8")


def test_torch_tensors_and_bf16() -> None:
    torch = pytest.importorskip("torch")
    k, v = kv()
    kt, vt = torch.from_numpy(k).bfloat16(), torch.from_numpy(v).bfloat16()
    page = qaqkv.encode(kt, vt, "fp16")
    out = (torch.empty(64, 2, 64, dtype=torch.bfloat16), torch.empty(64, 2, 64, dtype=torch.bfloat16))
    dk, dv = qaqkv.decode(page, out=out)
    assert dk is out[0]
    # bf16 -> fp16 page -> bf16 loses nothing for values of this range.
    assert torch.equal(dk, kt) and torch.equal(dv, vt)
    # The same bits as a uint16 numpy array with dtype="bf16".
    bits_k = kt.view(torch.int16).numpy().view(np.uint16)
    bits_v = vt.view(torch.int16).numpy().view(np.uint16)
    assert qaqkv.encode(bits_k, bits_v, "fp16", dtype="bf16") == page


def test_bad_inputs_name_the_field() -> None:
    k, v = kv()
    with pytest.raises(qaqkv.InvalidArgument, match="codec"):
        qaqkv.encode(k, v, "zip")
    with pytest.raises(qaqkv.InvalidArgument, match="dtype='bf16'"):
        qaqkv.encode(k.view(np.uint32)[:, :, :32].astype(np.uint16), v, "fp16")
    with pytest.raises(qaqkv.InvalidArgument, match="float16 or float32"):
        qaqkv.encode(k.astype(np.float64), v, "fp16")
    with pytest.raises(qaqkv.InvalidArgument, match="v: shape"):
        qaqkv.encode(k, v[:10], "fp16")
    with pytest.raises(qaqkv.InvalidArgument, match="attention"):
        qaqkv.encode(k, v, "qaq", attention=np.zeros(5, np.float32))
    with pytest.raises(ValueError):  # InvalidArgument is a ValueError
        qaqkv.encode(k, v, "fp16", layout="THD")
    page = qaqkv.encode(k, v, "int8")
    with pytest.raises(qaqkv.InvalidArgument, match="read-only"):
        ro = np.empty((64, 2, 64), np.float32)
        ro.flags.writeable = False
        qaqkv.decode(page, out=(ro, np.empty_like(ro)))
    with pytest.raises(qaqkv.InvalidArgument, match="shape"):
        qaqkv.decode(page, out=(np.empty((64, 2, 32), np.float32),) * 2)


def test_corrupt_pages_are_data_loss_and_never_decode() -> None:
    k, v = kv()
    page = bytearray(qaqkv.encode(k, v, "qaq"))
    page[len(page) // 2] ^= 0x40
    for fn in (qaqkv.inspect, qaqkv.verify, qaqkv.decode, qaqkv.page_stats):
        with pytest.raises(qaqkv.DataLoss):
            fn(bytes(page))
    with pytest.raises(qaqkv.DataLoss):
        qaqkv.decode(b"")
    with pytest.raises(qaqkv.InvalidArgument, match="page"):
        qaqkv.inspect(12345)  # not bytes-like


def test_side_inputs_lower_the_error_of_attended_tokens() -> None:
    k, v = kv(tokens=256)
    attention = np.full((256, 2), 1e-4, np.float32)
    attention[-16:] = 0.5
    page = qaqkv.encode(k, v, "qaq", attention=attention, q2=np.ones(2, np.float32))
    default = qaqkv.encode(k, v, "qaq")
    # Tokens predicted to be ignored get fewer bits: a smaller page.
    assert len(page) < len(default)
    dk, _ = qaqkv.decode(page)
    assert rel_err(dk[-16:], k[-16:]) < rel_err(dk[:-16], k[:-16])


def numpy_window_stats(keys: np.ndarray, queries: np.ndarray, positions: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """docs/qaq.md's window statistics, stated plainly."""
    T, H, D = keys.shape
    n, Q, _ = queries.shape
    group = Q // H
    attention = np.zeros((T, H), np.float64)
    seen = np.zeros(T, np.int64)
    for i, pos in enumerate(positions):
        seen[: pos + 1] += 1
        for qh in range(Q):
            h = qh // group
            logits = keys[: pos + 1, h, :].astype(np.float64) @ queries[i, qh].astype(np.float64)
            logits /= math.sqrt(D)
            p = np.exp(logits - logits.max())
            p /= p.sum()
            attention[: pos + 1, h] = np.maximum(attention[: pos + 1, h], p)
    attention[seen < n] = -1.0
    return attention.astype(np.float32), numpy_q2(queries, H, 0.9)


def numpy_q2(queries: np.ndarray, kv_heads: int, percentile: float) -> np.ndarray:
    n, Q, D = queries.shape
    group = Q // kv_heads
    out = np.empty(kv_heads, np.float32)
    for h in range(kv_heads):
        norms = np.sort((queries[:, h * group:(h + 1) * group, :].astype(np.float64) ** 2)
                        .sum(axis=-1).reshape(-1) / D)
        out[h] = max(norms[min(len(norms) - 1, math.ceil(percentile * len(norms)) - 1)], 1e-12)
    return out


@pytest.mark.parametrize("T, H, Q, n", [(40, 1, 2, 5), (33, 2, 8, 3), (10, 4, 4, 1)])
def test_window_stats_match_the_numpy_statement(T: int, H: int, Q: int, n: int) -> None:
    rng = np.random.default_rng(T * 7 + n)
    keys = rng.standard_normal((T, H, 64)).astype(np.float32)
    queries = (2.0 * rng.standard_normal((n, Q, 64))).astype(np.float32)
    positions = np.arange(T - n, T, dtype=np.int32)
    attention, q2 = qaqkv.window_stats(keys, queries, positions)
    want_a, want_q2 = numpy_window_stats(keys, queries, positions)
    assert attention.shape == (T, H) and q2.shape == (H,)
    np.testing.assert_allclose(attention, want_a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(q2, want_q2, rtol=1e-6)
    assert (attention[: T - n] >= 0).all() and (attention[T - n + 1:] == -1).all()
    for pct in (0.5, 1.0):
        np.testing.assert_allclose(qaqkv.q2(queries, H, pct), numpy_q2(queries, H, pct), rtol=1e-6)


def test_window_stats_refuse_bad_shapes() -> None:
    keys = np.zeros((10, 2, 64), np.float32)
    with pytest.raises(qaqkv.InvalidArgument, match="query_positions"):
        qaqkv.window_stats(keys, np.zeros((2, 2, 64), np.float32), [9])
    with pytest.raises(qaqkv.InvalidArgument, match="query_positions"):
        qaqkv.window_stats(keys, np.zeros((1, 2, 64), np.float32), [10])
    with pytest.raises(qaqkv.InvalidArgument, match="head_dim"):
        qaqkv.window_stats(keys, np.zeros((1, 2, 32), np.float32), [3])
    with pytest.raises(qaqkv.InvalidArgument, match="q_heads"):
        qaqkv.window_stats(keys, np.zeros((1, 3, 64), np.float32), [3])


def test_block_keys_chain_over_the_prefix() -> None:
    tokens = list(range(1000))
    keys = qaqkv.block_keys("model", "qaq", tokens, 256)
    assert len(keys) == 3 and all(len(key) == 16 for key in keys)
    changed = tokens.copy()
    changed[300] = 7
    other = qaqkv.block_keys("model", "qaq", changed, 256)
    assert other[0] == keys[0] and other[1] != keys[1] and other[2] != keys[2]
    assert qaqkv.block_keys("other-model", "qaq", tokens, 256)[0] != keys[0]
    assert qaqkv.block_keys("model", "qaq", np.array(tokens, np.int64), 256) == keys
    with pytest.raises(qaqkv.InvalidArgument, match="int32"):
        qaqkv.block_keys("model", "qaq", [2**40], 256)


def test_canonical_codec_and_cpu_features() -> None:
    assert qaqkv.canonical_codec("qaq") == "qaq:s=0.001,x=0.001,o=0.01,b=0-8"
    assert qaqkv.canonical_codec(qaqkv.canonical_codec("int4")) == qaqkv.canonical_codec("int4")
    with pytest.raises(qaqkv.InvalidArgument):
        qaqkv.canonical_codec("zip")
    assert set(qaqkv.cpu_features()) == {"avx2", "avx512"}


def test_errors_carry_code_and_message() -> None:
    with pytest.raises(qaqkv.Error) as info:
        qaqkv.canonical_codec("zip")
    assert info.value.code == "INVALID_ARGUMENT"
    assert "zip" in info.value.message and str(info.value).startswith("INVALID_ARGUMENT: ")


class FakeCudaArray:
    """Only the __cuda_array_interface__ dict: never dereferenced here."""

    def __init__(self, shape, typestr="<f2", strides=None, readonly=False) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr,
                                         "data": (0x7000_0000, readonly), "strides": strides,
                                         "version": 3}


def test_gpu_arrays_are_read_through_the_cuda_array_interface() -> None:
    from qaqkv import _arrays, _qaqkv

    if not _qaqkv._has_cuda:
        with pytest.raises(qaqkv.InvalidArgument, match="without CUDA"):
            _arrays.buffer(FakeCudaArray((4, 2, 8)), "k")
        return
    b = _arrays.buffer(FakeCudaArray((4, 2, 8)), "k")
    assert (b.address, b.shape, b.dtype, b.device) == (0x7000_0000, (4, 2, 8), "fp16", "cuda")
    assert _arrays.buffer(FakeCudaArray((4, 2, 8), strides=(32, 16, 2)), "k").dtype == "fp16"
    with pytest.raises(qaqkv.InvalidArgument, match="C-contiguous"):
        _arrays.buffer(FakeCudaArray((4, 2, 8), strides=(64, 16, 2)), "k")
    with pytest.raises(qaqkv.InvalidArgument, match="read-only"):
        _arrays.buffer(FakeCudaArray((4, 2, 8), readonly=True), "out", writable=True)
    with pytest.raises(qaqkv.InvalidArgument, match="typestr"):
        _arrays.buffer(FakeCudaArray((4, 2, 8), typestr="<f8"), "k")
    assert _arrays.buffer(FakeCudaArray((4,), typestr="<u2"), "k", dtype="bf16").dtype == "bf16"
    with pytest.raises(qaqkv.InvalidArgument, match="CPU arrays"):
        qaqkv.encode(FakeCudaArray((4, 2, 8)), FakeCudaArray((4, 2, 8)), "fp16")
