"""Local page work with the project's C++ codec: no server involved.

A page is the K and V of one layer of one block, ``tokens x kv_heads x
head_dim`` values each. `encode` writes the self-describing bytes the
service stores (docs/page-format.md); `decode` turns them back into values.
Every byte is counted by `page_stats` (headers, scales, outlier indices).

QAQ's side inputs come from the model: `window_stats` computes, from the
last few queries and the keys, the predicted attention of every token and
Q2 per KV head, the same math as the C++ ComputeWindowStats; `q2` computes
Q2 alone from any set of queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from qaqkv import _qaqkv
from qaqkv._arrays import buffer, float32
from qaqkv.errors import InvalidArgument


@dataclass(frozen=True)
class PageInfo:
    """What a page's header says: format version, codec, group level and shape."""

    version: int
    codec: str
    group: str
    tokens: int
    kv_heads: int
    head_dim: int
    encoded_bytes: int


@dataclass(frozen=True)
class PageStats:
    """Honest size accounting of one page (docs/qaq.md, section 6)."""

    values: int                 # K and V values in the page
    encoded_bytes: int          # every byte stored, headers included
    outliers: int               # values kept exact as outliers
    exact_values: int           # values in width-16 groups or fp16 residual
    code_bits: float            # sum over quantized values of their width
    ratio: float                # fp16 bytes / encoded bytes
    paper_bits_per_value: float  # the paper's convention: no metadata counted


def canonical_codec(codec: str) -> str:
    """The canonical name of a codec spelling, as the server compares it
    ("qaq" -> "qaq:s=0.001,x=0.001,o=0.01,b=0-8"). InvalidArgument if unknown."""
    return _qaqkv._canonical_codec(codec)


def block_keys(model: str, codec: str, token_ids: Sequence[int] | np.ndarray,
               block_tokens: int) -> list[bytes]:
    """The 16-byte keys of the full blocks of `token_ids`, chained over the
    prefix: equal prefixes give equal keys and a changed token changes its
    block's key and every later one. A trailing partial block gets none.
    `model` fingerprints the model (weights, tokenizer); pass a canonical
    codec name so that spellings do not split the cache."""
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.ndim != 1:
        raise InvalidArgument("token_ids: expected a 1-D sequence")
    if ids.size and (ids.min() < -2**31 or ids.max() >= 2**31):
        raise InvalidArgument("token_ids: every id must fit in int32")
    return _qaqkv._block_keys(model, codec, ids.astype(np.int32), block_tokens)


def _page_shape(k: Any, layout: str) -> tuple[int, int, int]:
    if len(k.shape) != 3:
        raise InvalidArgument(f"k: expected 3 dimensions ({layout}), got shape {k.shape}")
    if layout == "NHD":
        return k.shape[0], k.shape[1], k.shape[2]
    if layout == "HND":
        return k.shape[1], k.shape[0], k.shape[2]
    raise InvalidArgument(f"layout: \"{layout}\" is not NHD or HND")


def encode(k: Any, v: Any, codec: str = "qaq", *, layout: str = "NHD",
           dtype: Optional[str] = None, attention: Any = None, q2: Any = None,
           context_tokens: int = 0) -> bytes:
    """Encodes one page from K and V (numpy or torch CPU; fp16, bf16 or fp32;
    ``[tokens, kv_heads, head_dim]`` for NHD, ``[kv_heads, tokens, head_dim]``
    for HND). QAQ's side inputs: `attention` per (token, kv head), ``[tokens,
    kv_heads]``, and `q2` per kv head (see `window_stats`); missing ones take
    the conservative defaults. `dtype="bf16"` marks uint16 arrays of bf16
    bits. Returns the page bytes."""
    kb = buffer(k, "k", dtype=dtype)
    vb = buffer(v, "v", dtype=dtype)
    if kb.device != "cpu" or vb.device != "cpu":
        raise InvalidArgument("k, v: local encode takes CPU arrays (Client.offload takes CUDA)")
    if kb.shape != vb.shape or kb.dtype != vb.dtype:
        raise InvalidArgument(f"v: shape {vb.shape} {vb.dtype}, but k is {kb.shape} {kb.dtype}")
    tokens, heads, dim = _page_shape(kb, layout)
    side_a = None if attention is None else float32(attention).reshape(-1)
    side_q = None if q2 is None else float32(q2).reshape(-1)
    return _qaqkv._encode(codec, tokens, heads, dim, kb.address, vb.address, kb.dtype, layout,
                          side_a, side_q, context_tokens)


def inspect(page: bytes | bytearray | memoryview) -> PageInfo:
    """The page's header, after its checksum passed (DataLoss if not)."""
    return PageInfo(**_qaqkv._inspect(page))


def verify(page: bytes | bytearray | memoryview, codec: Optional[str] = None) -> PageInfo:
    """Everything `decode` checks, without decoding: a page that verifies
    decodes. With `codec`, the page must also be what that codec writes."""
    return PageInfo(**_qaqkv._verify(page, codec))


def decode(page: bytes | bytearray | memoryview, *, dtype: str = "fp32", layout: str = "NHD",
           out: Optional[tuple[Any, Any]] = None) -> tuple[Any, Any]:
    """Decodes a page. Returns new numpy arrays (`dtype` "fp32" or "fp16") in
    `layout`, or fills `out=(k, v)`: writable, C-contiguous numpy arrays or
    torch CPU tensors of the page's shape (bf16 tensors allowed)."""
    info = inspect(page)
    shape = ((info.tokens, info.kv_heads, info.head_dim) if layout == "NHD"
             else (info.kv_heads, info.tokens, info.head_dim))
    if out is None:
        np_dtype = {"fp32": np.float32, "fp16": np.float16}.get(dtype)
        if np_dtype is None:
            raise InvalidArgument(f"dtype: \"{dtype}\" is not fp32 or fp16 (bf16: pass out=)")
        out = (np.empty(shape, np_dtype), np.empty(shape, np_dtype))
    kb = buffer(out[0], "out[0]", writable=True)
    vb = buffer(out[1], "out[1]", writable=True)
    for name, b in (("out[0]", kb), ("out[1]", vb)):
        if b.device != "cpu":
            raise InvalidArgument(f"{name}: local decode writes CPU memory")
        if tuple(b.shape) != shape:
            raise InvalidArgument(f"{name}: shape {tuple(b.shape)}, the page holds {shape}")
    if kb.dtype != vb.dtype:
        raise InvalidArgument(f"out[1]: dtype {vb.dtype}, but out[0] is {kb.dtype}")
    _qaqkv._decode(page, kb.address, vb.address, kb.dtype, layout, info.tokens, info.kv_heads,
                   info.head_dim)
    return out[0], out[1]


def page_stats(page: bytes | bytearray | memoryview) -> PageStats:
    """Every stored byte of a page, counted (see PageStats)."""
    return PageStats(**_qaqkv._page_stats(page))


def _f32(x: Any, name: str, ndim: int) -> np.ndarray:
    a = float32(x)
    if a.ndim != ndim:
        raise InvalidArgument(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    return a


def window_stats(keys: Any, queries: Any, query_positions: Sequence[int] | np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """QAQ's side inputs of one layer from the model's own tensors.

    `keys`: ``[T, kv_heads, head_dim]``, the context's keys after RoPE.
    `queries`: ``[n, q_heads, head_dim]``, the last n queries after RoPE
    (unscaled), at positions `query_positions` (each < T).

    Returns ``(attention, q2)``: attention ``[T, kv_heads]`` is the largest
    attention probability any of the n queries (and any query head of the
    KV head's group) gives the token, -1 for tokens fewer than n queries see
    (they get the widest codes); q2 ``[kv_heads]`` is the 90th percentile of
    ``|q / sqrt(head_dim)|^2``. The same math as the C++ ComputeWindowStats.

    Engines whose fused attention never materializes probabilities can call
    this with the last n queries they computed: it recomputes exactly those
    scores from the cached keys, O(n * T) per layer."""
    positions = np.ascontiguousarray(query_positions, dtype=np.int32)
    return _qaqkv._window_stats(_f32(keys, "keys", 3), _f32(queries, "queries", 3), positions)


def q2(queries: Any, kv_heads: int, percentile: float = 0.9) -> np.ndarray:
    """Q2 per KV head from any queries ``[n, q_heads, head_dim]`` (after
    RoPE, unscaled): the `percentile` of ``|q / sqrt(head_dim)|^2`` over the
    queries and the query heads of each KV head's group."""
    return _qaqkv._q2(_f32(queries, "queries", 3), kv_heads, percentile)


def cpu_features() -> dict[str, bool]:
    """Which vector paths the codec can use on this CPU."""
    return dict(_qaqkv._cpu_features())
