"""qaqkv.Client: offload KV caches to the qaqkv service and load them back.

A worker computes block keys from its token ids, asks the service how much
of the prefix it has (`lookup`), loads that part layer by layer (`load`,
`load_layers`) so the model can start on layer 0 while later layers arrive,
and offloads what it computed (`offload`). Chat sessions are saved whole
(`offload_session`) and resumed in a fresh process (`resume_session`).

Buffers are numpy arrays or torch tensors (CPU, or CUDA in CUDA builds) of
fp16, bf16 or fp32, one per layer (a list) or one ``[layers, ...]`` array;
NHD is ``[tokens, kv_heads, head_dim]``, HND ``[kv_heads, tokens, head_dim]``.
They are used in place when contiguous. The GIL is released while the
client encodes, decodes and talks to the server, and a Client may be used
from any number of threads at once.

Errors are `qaqkv.Error` subclasses, one per status code, with the server's
message (qaqkv.errors).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

from qaqkv import _qaqkv
from qaqkv._arrays import KvBuffers, kv_buffers, side_inputs
from qaqkv.errors import InvalidArgument

Geometry = _qaqkv.Geometry


@dataclass(frozen=True)
class OffloadResult:
    """What an offload stored."""

    blocks_committed: int  # blocks the server reports committed
    pages: int             # pages the server stored
    raw_bytes: int         # K+V bytes of those pages at 2 bytes per value
    stored_bytes: int      # encoded bytes the server stored
    encode_seconds: float  # CPU time in the encoder, summed over threads
    seconds: float         # wall time of the call

    @property
    def ratio(self) -> float:
        """fp16 bytes over stored bytes (every stored byte counted)."""
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 0.0


@dataclass(frozen=True)
class LoadResult:
    """What a load fetched and decoded."""

    pages: int
    stored_bytes: int
    first_layer_seconds: float  # until the first requested layer was complete
    seconds: float


@dataclass(frozen=True)
class SessionInfo:
    """A saved chat session as the server holds it."""

    session_id: str
    geometry: Any  # Geometry
    codec: str     # canonical codec name
    blocks: list[bytes]
    token_count: int
    committed_prefix: int  # leading blocks still stored (fewer: some were evicted)
    tail_bytes: int        # encoded bytes of the partial last block (0: none)
    created: float         # Unix seconds
    accessed: float
    ttl: float             # seconds; 0: never expires


@dataclass(frozen=True)
class TierStats:
    """One storage tier of the server(s), by name ("dram", "disk")."""

    name: str
    hits: int
    misses: int
    evictions: int
    bytes: int
    entries: int
    budget_bytes: int


@dataclass(frozen=True)
class ServerStats:
    """GetStats: the caller's tenant, every tier, and the server's counters.
    With several servers, sums over them."""

    tenant_bytes: int
    tenant_blocks: int
    tiers: list[TierStats]
    blocks_evicted: int
    checksum_failures: int
    total_bytes: int
    blocks: int
    background_errors: int
    version: str


@dataclass(frozen=True)
class PutResult:
    """What a put_pages call stored."""

    committed_blocks: list[bytes]
    pages: int
    bytes: int


@dataclass(frozen=True)
class BlockFormat:
    """The format every page of the fetched blocks was written under."""

    geometry: Any  # Geometry
    codec: str


def _geometry(d: dict) -> Any:
    return Geometry(**d)


def _session(d: dict) -> SessionInfo:
    return SessionInfo(**{**d, "geometry": _geometry(d["geometry"])})


def _native_buffers(kv: KvBuffers, first_token: int) -> Any:
    b = _qaqkv._Buffers()
    b.k = [x.address for x in kv.k]
    b.v = [x.address for x in kv.v]
    b.dtype = kv.dtype
    b.layout = kv.layout
    b.tokens = kv.tokens
    b.first_token = first_token
    return b


def _native_side(layers: int, attention: Optional[Sequence[Any]], q2: Optional[Sequence[Any]],
                 context_tokens: int) -> Any:
    s = _qaqkv._Side()
    s.attention = side_inputs(attention, "attention", layers)
    s.q2 = side_inputs(q2, "q2", layers)
    s.context_tokens = context_tokens
    return s


def _check_geometry(geometry: Any, kv: KvBuffers) -> None:
    if len(kv.k) != geometry.num_layers:
        raise InvalidArgument(f"k: {len(kv.k)} layers, the geometry has {geometry.num_layers}")
    if kv.kv_heads != geometry.num_kv_heads or kv.head_dim != geometry.head_dim:
        raise InvalidArgument(
            f"k: {kv.kv_heads} heads x {kv.head_dim} dims, the geometry has "
            f"{geometry.num_kv_heads} x {geometry.head_dim}")


def _keys(keys: Sequence[bytes]) -> list[bytes]:
    return [bytes(k) for k in keys]


class Client:
    """A connection to the qaqkv service (one server, a sharded list, or DNS
    discovery). Thread-safe; every method blocks until its call is done."""

    def __init__(self, target: Optional[str] = None, *, servers: Optional[Sequence[str]] = None,
                 discovery: Optional[str] = None, token: Optional[str] = None, tls: bool = False,
                 tls_root_certs: Optional[str] = None, tls_client_cert: Optional[str] = None,
                 tls_client_key: Optional[str] = None, tls_server_name: Optional[str] = None,
                 deadline: float = 30.0, attempts: int = 4, replicas: int = 0,
                 write_quorum: int = 0, encode_threads: int = 0, channels: int = 1) -> None:
        """Exactly one of `target` ("host:port" or any gRPC target), `servers`
        (a list of "host:port": blocks are placed by rendezvous hashing and
        kept on `replicas` of them, 0: 2) and `discovery` (a DNS name
        "name:port" whose every address is a server) names the servers.

        token: sent as "authorization: Bearer <token>". tls: use TLS; the
        tls_* arguments are PEM text (roots, the client's chain and key for
        mTLS) and the name the server's certificate must carry when it is not
        the target's host (needed with discovery, which dials pod IPs).
        deadline: seconds per call attempt; attempts: tries of a call that
        found the server unavailable (1: no retry); write_quorum: replicas
        that must acknowledge a write (0: all); encode_threads: codec threads
        (0: one per core); channels: TCP connections used round-robin.

        Connects lazily: an unreachable server is an error of the first call,
        not here. InvalidArgument (naming the option) for bad options."""
        options = {
            "target": target, "servers": list(servers) if servers is not None else None,
            "discovery": discovery, "token": token, "tls": tls,
            "tls_root_certs": tls_root_certs, "tls_client_cert": tls_client_cert,
            "tls_client_key": tls_client_key, "tls_server_name": tls_server_name,
            "deadline": float(deadline), "attempts": int(attempts), "replicas": int(replicas),
            "write_quorum": int(write_quorum), "encode_threads": int(encode_threads),
            "channels": int(channels),
        }
        self._native = _qaqkv._Client(options)

    def close(self) -> None:
        """Closes the channels. The client cannot be used afterwards."""
        self._native = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _client(self) -> Any:
        if self._native is None:
            raise InvalidArgument("client: closed")
        return self._native

    # ---- Blocks -------------------------------------------------------------

    def lookup(self, keys: Sequence[bytes], geometry: Any = None, codec: str = "") -> int:
        """How many leading blocks of `keys` the service holds, committed. With
        `geometry` and `codec`, a block counts only if written in that format."""
        if geometry is not None and not codec:
            raise InvalidArgument("codec: required with geometry")
        return self._client().lookup(_keys(keys), geometry, codec)

    def offload(self, geometry: Any, keys: Sequence[bytes], k: Any, v: Any, *,
                codec: str = "qaq", layout: str = "NHD", first_token: int = 0,
                attention: Optional[Sequence[Any]] = None, q2: Optional[Sequence[Any]] = None,
                context_tokens: int = 0) -> OffloadResult:
        """Encodes and stores block b, layer l from rows ``[first_token + b *
        block_tokens, + block_tokens)`` of k[l] and v[l], for every block of
        `keys`. QAQ's side inputs, per layer (or None): `attention` ``[rows,
        kv_heads]`` in the buffers' row coordinates and `q2` ``[kv_heads]``
        (see qaqkv.window_stats); `context_tokens` is the context length of
        QAQ's bounds (0: the rows offloaded)."""
        kv = kv_buffers(k, v, layout, dtype=None)
        _check_geometry(geometry, kv)
        side = _native_side(geometry.num_layers, attention, q2, context_tokens)
        r = self._client().offload(geometry, codec, _keys(keys), _native_buffers(kv, first_token),
                                   side)
        return OffloadResult(**r)

    def load(self, geometry: Any, keys: Sequence[bytes], k: Any, v: Any, *, codec: str = "",
             layout: str = "NHD", first_token: int = 0, layer_begin: int = 0,
             layer_end: int = 0, on_layer: Optional[Callable[[int], None]] = None) -> LoadResult:
        """Fetches layers [layer_begin, layer_end) (0: all) of the blocks of
        `keys` and decodes them into k and v (writable buffers) at rows
        ``first_token + b * block_tokens``. `on_layer(l)` is called as each
        layer completes, in order, from a decode thread (keep it short; do
        not call this client from it); an exception it raises is re-raised
        when the load is done. `codec`, if given, must be what was stored
        (FailedPrecondition otherwise). NotFound when a block is missing."""
        kv = kv_buffers(k, v, layout, writable=True)
        _check_geometry(geometry, kv)
        r = self._client().load(geometry, codec, _keys(keys), _native_buffers(kv, first_token),
                                layer_begin, layer_end, on_layer)
        return LoadResult(**r)

    def load_layers(self, geometry: Any, keys: Sequence[bytes], k: Any, v: Any,
                    **kwargs: Any) -> Iterator[int]:
        """`load` as an iterator: yields each layer index as soon as that
        layer is in k and v, so a model can run layer 0 while later layers
        still arrive. Takes load's keyword arguments (not on_layer); raises
        load's error at the end of the iteration."""
        if "on_layer" in kwargs:
            raise InvalidArgument("on_layer: load_layers yields the layers itself")
        done = object()
        layers: "queue.Queue[Any]" = queue.Queue()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = self.load(geometry, keys, k, v, on_layer=layers.put, **kwargs)
            except BaseException as e:  # handed to the consumer below
                outcome["error"] = e
            finally:
                layers.put(done)

        worker = threading.Thread(target=run, name="qaqkv-load", daemon=True)
        worker.start()
        while (layer := layers.get()) is not done:
            yield layer
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    # ---- Sessions -----------------------------------------------------------

    def offload_session(self, session_id: str, geometry: Any, keys: Sequence[bytes],
                        token_count: int, k: Any, v: Any, *, codec: str = "qaq",
                        ttl: float = 0.0, layout: str = "NHD", first_token: int = 0,
                        attention: Optional[Sequence[Any]] = None,
                        q2: Optional[Sequence[Any]] = None, context_tokens: int = 0
                        ) -> OffloadResult:
        """Saves a chat session of `token_count` tokens: offloads its full
        blocks (`keys`, those not stored yet) from k and v, which hold all
        token_count rows from `first_token`, and stores the partial last
        block as the session's tail. `ttl` in seconds (0: never expires);
        every access renews it. Returns what this call stored: the blocks it
        offloaded plus the tail (one page); blocks_committed is the
        session's blocks."""
        kv = kv_buffers(k, v, layout)
        _check_geometry(geometry, kv)
        side = _native_side(geometry.num_layers, attention, q2, context_tokens)
        return OffloadResult(**self._client().offload_session(
            session_id, geometry, codec, _keys(keys), int(token_count), float(ttl),
            _native_buffers(kv, first_token), side))

    def resume_session(self, session_id: str, k: Any, v: Any, *, layout: str = "NHD",
                       first_token: int = 0,
                       on_layer: Optional[Callable[[int], None]] = None) -> SessionInfo:
        """Loads a saved session into k and v (writable, in the session's
        geometry, holding token_count rows from `first_token`; get_session
        says how many). on_layer as in `load`. NotFound (saying how many
        blocks are missing) when blocks were evicted: recompute instead."""
        kv = kv_buffers(k, v, layout, writable=True)
        return _session(self._client().resume_session(
            session_id, _native_buffers(kv, first_token), on_layer))

    def get_session(self, session_id: str) -> SessionInfo:
        """The session's record (renews its TTL). NotFound if unknown or expired."""
        return _session(self._client().get_session(session_id))

    def list_sessions(self, limit: int = 0) -> list[str]:
        """Session ids of the caller's tenant (limit 0: the server's default)."""
        return list(self._client().list_sessions(int(limit)))

    def touch_session(self, session_id: str) -> None:
        """Renews the session's TTL. NotFound if unknown or expired."""
        self._client().touch_session(session_id)

    def delete_session(self, session_id: str) -> None:
        """Deletes the session record (its blocks stay, shared by prefix)."""
        self._client().delete_session(session_id)

    # ---- Raw pages and stats ------------------------------------------------

    def put_pages(self, geometry: Any, codec: str,
                  pages: Sequence[tuple[bytes, int, bytes]]) -> PutResult:
        """Stores already encoded pages, each (block_key, layer, page_bytes)
        as qaqkv.encode wrote them. The server verifies every page."""
        r = self._client().put_pages(geometry, codec,
                                     [(bytes(b), int(layer), p) for b, layer, p in pages])
        return PutResult(**r)

    def get_pages(self, keys: Sequence[bytes], layer_begin: int = 0, layer_end: int = 0
                  ) -> tuple[BlockFormat, list[tuple[bytes, int, bytes]]]:
        """The stored pages of layers [layer_begin, layer_end) (0: all) of the
        blocks, layer-major, as (block_key, layer, page_bytes), with their format."""
        fmt, pages = self._client().get_pages(_keys(keys), layer_begin, layer_end)
        return BlockFormat(_geometry(fmt["geometry"]), fmt["codec"]), list(pages)

    def stats(self) -> ServerStats:
        """The server's figures (summed over servers with several)."""
        d = self._client().stats()
        return ServerStats(**{**d, "tiers": [TierStats(**t) for t in d["tiers"]]})

    def servers(self) -> list[dict[str, Any]]:
        """The servers this client places data on and their health."""
        return list(self._client().servers())
