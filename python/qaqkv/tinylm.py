"""tinylm: the small byte-level LLaMA-style model behind ``data/tinylm-kv``, live.

Pure Python + PyTorch, fp32 compute from the fp16 weights in
``data/tinylm/weights.safetensors`` (the model is defined exactly in
``data/tinylm/README.md``): 256-byte vocabulary with no BOS token, 4 pre-norm layers of
d_model 256, grouped-query attention with 2 query heads and 1 KV head of head_dim 64,
RoPE (theta 10000, "rotate_half" layout: channel i rotates with channel i + 32), RMSNorm
(eps 1e-5), SwiGLU MLP of hidden size 768, untied output head, no biases, y = x W^T,
context 1024.

The KV cache (:class:`KVCache`) holds, per layer, K (after RoPE) and V as float32 tensors of
shape ``[tokens, kv_heads, head_dim]`` (NHD). It can be exported to numpy and rebuilt from
per-layer arrays, layer by layer, which is what a resume from the cache service does.

Typical use::

    model = TinyLM.load()
    logits, cache = model.prefill(b"The quick brown fox")
    text = model.generate(cache, int(logits[-1].argmax()), 40)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from qaqkv import safetensors

#: Environment variable naming the repository's ``data`` folder (the one holding ``tinylm/``).
DATA_DIR_ENV = "QAQKV_DATA_DIR"

#: Anything :meth:`TinyLM.prefill` accepts as tokens.
Tokens = Union[bytes, bytearray, Sequence[int], np.ndarray, torch.Tensor]
#: Anything :meth:`KVCache.set_layer` accepts as a K or V block.
ArrayLike = Union[np.ndarray, torch.Tensor]

_WEIGHTS_REL = Path("tinylm") / "weights.safetensors"


def data_dir() -> Path:
    """Return the repository's ``data`` folder (the one holding ``tinylm/weights.safetensors``).

    If ``$QAQKV_DATA_DIR`` is set it is used (it may name the ``data`` folder itself or the
    repository root above it). Otherwise the folders above this file are searched, then the
    folders above the current directory, for ``data/tinylm/weights.safetensors``; this also
    works from a copy of the package under ``build/<preset>/python/qaqkv/``. Raises
    ``FileNotFoundError`` listing where it looked.
    """
    tried: List[str] = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        base = Path(env).expanduser()
        for cand in (base, base / "data"):
            if (cand / _WEIGHTS_REL).is_file():
                return cand
            tried.append(str(cand / _WEIGHTS_REL))
        raise FileNotFoundError(f"${DATA_DIR_ENV}={env!r} holds no tinylm weights; tried {tried}")
    starts = [Path(__file__).resolve().parent, Path(__file__).absolute().parent, Path.cwd()]
    seen = set()
    for start in starts:
        for folder in (start, *start.parents):
            if folder in seen:
                continue
            seen.add(folder)
            cand = folder / "data"
            if (cand / _WEIGHTS_REL).is_file():
                return cand
    raise FileNotFoundError(
        f"no data/{_WEIGHTS_REL.as_posix()} above {starts[0]} or {starts[2]}; "
        f"set ${DATA_DIR_ENV} to the repository's data folder"
    )


def default_weights_path() -> Path:
    """Path of the repository's ``data/tinylm/weights.safetensors`` (see :func:`data_dir`)."""
    return data_dir() / _WEIGHTS_REL


@dataclasses.dataclass(frozen=True)
class TinyLMConfig:
    """Model hyper-parameters. Defaults are those of ``tinyllama-byte-4l``."""

    vocab: int = 256
    d_model: int = 256
    num_layers: int = 4
    num_q_heads: int = 2
    num_kv_heads: int = 1
    head_dim: int = 64
    d_ff: int = 768
    context: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    # Keys of the weights file's __metadata__["config"] JSON that differ from the field names.
    _ALIASES = {
        "n_layers": "num_layers",
        "n_q_heads": "num_q_heads",
        "n_kv_heads": "num_kv_heads",
        "ctx": "context",
    }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> "TinyLMConfig":
        """Build a config from a weights file's ``__metadata__`` (its ``"config"`` JSON).

        Missing keys keep their defaults; unknown keys are ignored.
        """
        text = metadata.get("config")
        if not text:
            return cls()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"__metadata__['config'] is not JSON: {e}") from None
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        kw: Dict[str, object] = {}
        for key, value in raw.items():
            name = cls._ALIASES.get(key, key)
            if name in fields:
                kw[name] = float(value) if name in ("rope_theta", "norm_eps") else int(value)
        return cls(**kw)

    @property
    def group_size(self) -> int:
        """Query heads per KV head (query head h reads KV head h // group_size)."""
        return self.num_q_heads // self.num_kv_heads


def _as_float_tensor(x: ArrayLike, what: str) -> torch.Tensor:
    """Copy a numpy array or torch tensor of a floating dtype to a contiguous float32 CPU tensor."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise ValueError(f"{what}: dtype {x.dtype} is not a floating-point type")
        return x.detach().to(device="cpu", dtype=torch.float32).clone().contiguous()
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise ValueError(f"{what}: dtype {a.dtype} is not a floating-point type")
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


class KVCache:
    """Per-layer K (after RoPE) and V of the tokens seen so far.

    ``keys[l]`` and ``values[l]`` are float32 tensors of shape
    ``[length, num_kv_heads, head_dim]`` (NHD). :meth:`TinyLM.prefill` and
    :meth:`TinyLM.decode` extend a cache in place. A cache can be built layer by layer
    (``KVCache.empty(config)`` then :meth:`set_layer` for every layer), e.g. when resuming
    from the cache service; it is usable once every layer holds the same number of tokens.
    """

    def __init__(
        self,
        config: TinyLMConfig,
        keys: Optional[Sequence[ArrayLike]] = None,
        values: Optional[Sequence[ArrayLike]] = None,
    ) -> None:
        """Create a cache for ``config``; empty unless per-layer ``keys`` and ``values`` are given."""
        self.config = config
        empty = torch.zeros(0, config.num_kv_heads, config.head_dim, dtype=torch.float32)
        self.keys: List[torch.Tensor] = [empty.clone() for _ in range(config.num_layers)]
        self.values: List[torch.Tensor] = [empty.clone() for _ in range(config.num_layers)]
        if keys is None and values is None:
            return
        if keys is None or values is None:
            raise ValueError("give both keys and values, or neither")
        if len(keys) != config.num_layers or len(values) != config.num_layers:
            raise ValueError(
                f"expected {config.num_layers} layers of keys and values, "
                f"got {len(keys)} and {len(values)}"
            )
        for layer, (k, v) in enumerate(zip(keys, values)):
            self.set_layer(layer, k, v)
        self.check()

    @classmethod
    def empty(cls, config: TinyLMConfig) -> "KVCache":
        """An empty cache (0 tokens in every layer) for ``config``."""
        return cls(config)

    @classmethod
    def from_arrays(
        cls, config: TinyLMConfig, keys: Sequence[ArrayLike], values: Sequence[ArrayLike]
    ) -> "KVCache":
        """Build a cache from per-layer K and V arrays (numpy or torch, fp16/fp32, NHD)."""
        return cls(config, keys, values)

    def set_layer(self, layer: int, k: ArrayLike, v: ArrayLike) -> None:
        """Replace layer ``layer``'s K and V with copies of ``k`` and ``v``.

        ``k`` and ``v`` are numpy arrays or torch tensors of a floating dtype (fp16, bf16,
        fp32, fp64; stored as float32), shaped ``[tokens, num_kv_heads, head_dim]`` with K
        after RoPE. Raises ``ValueError`` naming the layer on a bad layer index, shape,
        dtype, a length past the context, or non-finite values.
        """
        cfg = self.config
        if not isinstance(layer, int) or not 0 <= layer < cfg.num_layers:
            raise ValueError(f"layer {layer!r} out of range [0, {cfg.num_layers})")
        kt = _as_float_tensor(k, f"layer {layer} K")
        vt = _as_float_tensor(v, f"layer {layer} V")
        want = f"[tokens, {cfg.num_kv_heads}, {cfg.head_dim}]"
        for name, t in (("K", kt), ("V", vt)):
            if t.dim() != 3 or tuple(t.shape[1:]) != (cfg.num_kv_heads, cfg.head_dim):
                raise ValueError(f"layer {layer} {name}: shape {tuple(t.shape)}, expected {want} (NHD)")
        if kt.shape[0] != vt.shape[0]:
            raise ValueError(
                f"layer {layer}: K holds {kt.shape[0]} tokens but V holds {vt.shape[0]}"
            )
        if kt.shape[0] > cfg.context:
            raise ValueError(f"layer {layer}: {kt.shape[0]} tokens exceed the context of {cfg.context}")
        if not (torch.isfinite(kt).all() and torch.isfinite(vt).all()):
            raise ValueError(f"layer {layer}: K or V holds non-finite values")
        self.keys[layer] = kt
        self.values[layer] = vt

    def layer_lengths(self) -> List[int]:
        """Number of tokens held by each layer."""
        return [int(k.shape[0]) for k in self.keys]

    def check(self) -> None:
        """Raise ``ValueError`` unless every layer holds the same number of tokens."""
        lengths = self.layer_lengths()
        if len(set(lengths)) > 1:
            raise ValueError(
                f"KV cache layers hold different numbers of tokens {lengths}; "
                "fill every layer with set_layer before use"
            )

    @property
    def length(self) -> int:
        """Number of cached tokens (``ValueError`` while layers disagree, see :meth:`check`)."""
        self.check()
        return self.layer_lengths()[0] if self.keys else 0

    def layer_numpy(self, layer: int, dtype: Union[str, np.dtype, type] = np.float16) -> Tuple[np.ndarray, np.ndarray]:
        """Layer ``layer``'s ``(K, V)`` as numpy arrays ``[tokens, kv_heads, head_dim]`` of
        ``dtype`` (float16 or float32)."""
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float16), np.dtype(np.float32)):
            raise ValueError(f"export dtype must be float16 or float32, not {dt}")
        if not 0 <= layer < self.config.num_layers:
            raise ValueError(f"layer {layer!r} out of range [0, {self.config.num_layers})")
        return (
            self.keys[layer].numpy().astype(dt, copy=True),
            self.values[layer].numpy().astype(dt, copy=True),
        )

    def to_numpy(self, dtype: Union[str, np.dtype, type] = np.float16) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """All layers as ``(keys, values)``, lists of numpy arrays ``[tokens, kv_heads, head_dim]``."""
        pairs = [self.layer_numpy(layer, dtype) for layer in range(self.config.num_layers)]
        return [k for k, _ in pairs], [v for _, v in pairs]

    def clone(self) -> "KVCache":
        """An independent copy of this cache."""
        out = KVCache(self.config)
        out.keys = [k.clone() for k in self.keys]
        out.values = [v.clone() for v in self.values]
        return out

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` tokens of every layer."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} tokens to {length}")
        self.keys = [k[:length].clone() for k in self.keys]
        self.values = [v[:length].clone() for v in self.values]

    def __repr__(self) -> str:
        return f"KVCache(layers={self.config.num_layers}, lengths={self.layer_lengths()})"


def nll(logits: torch.Tensor, targets: Tokens) -> float:
    """Mean negative log-likelihood, in nats per byte, of ``targets`` ([T]) under ``logits`` ([T, vocab]).

    For the loss of a window ``x`` use ``nll(logits[:-1], x[1:])`` with ``logits`` from
    ``prefill(x)``: byte t+1 is predicted from bytes 0..t.
    """
    tgt = _tokens_tensor(targets, vocab=logits.shape[-1])
    if logits.dim() != 2 or logits.shape[0] != tgt.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} do not match {tgt.shape[0]} targets")
    return float(F.cross_entropy(logits.float(), tgt, reduction="mean"))


def _tokens_tensor(tokens: Tokens, vocab: int = 256) -> torch.Tensor:
    """Tokens as a 1-D int64 tensor, checked to lie in [0, vocab)."""
    if isinstance(tokens, str):
        raise TypeError("tokens must be bytes or integers, not str (encode the text first)")
    if isinstance(tokens, (bytes, bytearray, memoryview)):
        t = torch.tensor(list(bytes(tokens)), dtype=torch.int64)
    elif isinstance(tokens, torch.Tensor):
        if tokens.is_floating_point() or tokens.is_complex():
            raise ValueError(f"tokens must be integers, got a {tokens.dtype} tensor")
        t = tokens.detach().to(device="cpu", dtype=torch.int64)
    else:
        a = np.asarray(tokens)
        if a.size and a.dtype.kind not in "iub":
            raise ValueError(f"tokens must be integers, got dtype {a.dtype}")
        t = torch.from_numpy(a.astype(np.int64))
    if t.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab):
        raise ValueError(f"tokens must lie in [0, {vocab}), got range [{int(t.min())}, {int(t.max())}]")
    return t


class TinyLM:
    """The tinylm model: fp32 compute from (fp16) weights, with a :class:`KVCache`."""

    def __init__(self, weights: Mapping[str, ArrayLike], config: Optional[TinyLMConfig] = None,
                 cache_dtype: torch.dtype = torch.float32) -> None:
        """Build the model from a name -> array mapping (names as in ``weights.safetensors``).

        ``cache_dtype`` is the precision of the KV cache: float32 (the default, what the
        tinylm-kv files were dumped with) or float16/bfloat16, as an inference engine keeps
        its cache. With a 16-bit cache every new K and V is rounded before attention reads
        it (written to the cache, then read from it), so a cache rebuilt from fp16 pages is
        bit-identical to the one a process kept. Cache tensors stay float32 either way.

        Raises ``ValueError`` naming the tensor when one is missing or misshaped.
        """
        cfg = config or TinyLMConfig()
        self.config = cfg
        if cache_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"cache_dtype: {cache_dtype} is not float32, float16 or bfloat16")
        self.cache_dtype = cache_dtype
        qd, kvd = cfg.num_q_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        if cfg.num_q_heads % cfg.num_kv_heads:
            raise ValueError(f"{cfg.num_q_heads} query heads are not a multiple of {cfg.num_kv_heads} KV heads")
        if cfg.head_dim % 2:
            raise ValueError(f"head_dim {cfg.head_dim} must be even for RoPE")

        def get(name: str, shape: Tuple[int, ...]) -> torch.Tensor:
            if name not in weights:
                raise ValueError(f"weights: tensor {name!r} is missing")
            t = _as_float_tensor(weights[name], f"weights: tensor {name!r}")
            if tuple(t.shape) != shape:
                raise ValueError(f"weights: tensor {name!r} has shape {tuple(t.shape)}, expected {shape}")
            return t

        d = cfg.d_model
        self.embed = get("embed.weight", (cfg.vocab, d))
        self.layers: List[Dict[str, torch.Tensor]] = []
        for l in range(cfg.num_layers):
            p = f"layers.{l}."
            self.layers.append(
                {
                    "attn_norm": get(p + "attn_norm.weight", (d,)),
                    "wq": get(p + "wq.weight", (qd, d)),
                    "wk": get(p + "wk.weight", (kvd, d)),
                    "wv": get(p + "wv.weight", (kvd, d)),
                    "wo": get(p + "wo.weight", (d, qd)),
                    "mlp_norm": get(p + "mlp_norm.weight", (d,)),
                    "w_gate": get(p + "w_gate.weight", (cfg.d_ff, d)),
                    "w_up": get(p + "w_up.weight", (cfg.d_ff, d)),
                    "w_down": get(p + "w_down.weight", (d, cfg.d_ff)),
                }
            )
        self.norm = get("norm.weight", (d,))
        self.head = get("head.weight", (cfg.vocab, d))

        # RoPE tables [context, head_dim / 2]; angles computed in float64, then rounded.
        half = cfg.head_dim // 2
        inv_freq = cfg.rope_theta ** (-np.arange(half, dtype=np.float64) * 2.0 / cfg.head_dim)
        angles = np.outer(np.arange(cfg.context, dtype=np.float64), inv_freq)
        self._cos = torch.from_numpy(np.cos(angles).astype(np.float32))
        self._sin = torch.from_numpy(np.sin(angles).astype(np.float32))

    @classmethod
    def load(cls, path: Optional[Union[str, "os.PathLike[str]"]] = None,
             cache_dtype: torch.dtype = torch.float32) -> "TinyLM":
        """Load weights from a safetensors file (default: :func:`default_weights_path`).

        The config comes from the file's ``__metadata__["config"]`` where present;
        ``cache_dtype`` as in the constructor.
        """
        p = Path(path) if path is not None else default_weights_path()
        tensors, metadata = safetensors.load(p)
        return cls(tensors, TinyLMConfig.from_metadata(metadata), cache_dtype)

    # ---- building blocks -------------------------------------------------------------

    def _rmsnorm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.config.norm_eps) * w

    def _rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` [T, heads, head_dim] at positions ``pos`` [T] (rotate_half layout)."""
        half = self.config.head_dim // 2
        cos = self._cos[pos].unsqueeze(1)
        sin = self._sin[pos].unsqueeze(1)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    # ---- inference -------------------------------------------------------------------

    @torch.no_grad()
    def prefill(
        self, tokens: Tokens, cache: Optional[KVCache] = None, return_queries: bool = False
    ) -> Union[Tuple[torch.Tensor, KVCache], Tuple[torch.Tensor, KVCache, List[torch.Tensor]]]:
        """Run ``tokens`` through the model, continuing after ``cache`` if one is given.

        ``tokens``: bytes, a sequence of ints in [0, 256) or a 1-D integer tensor/array. The
        new tokens take positions ``cache.length ...`` and attend causally to the cached and
        new keys. The cache (a new one when ``cache`` is None) is extended **in place** with
        the new K (after RoPE) and V, and returned.

        Returns ``(logits [T, vocab], cache)``, or with ``return_queries`` also a list of
        per-layer queries after RoPE, ``[T, num_q_heads, head_dim]`` float32 (not divided by
        sqrt(head_dim)). Raises ``ValueError`` for empty or out-of-range tokens, a cache of
        another shape, or ``cache.length + T`` past the context.
        """
        cfg = self.config
        toks = _tokens_tensor(tokens, cfg.vocab)
        T = int(toks.shape[0])
        if T == 0:
            raise ValueError("prefill needs at least one token")
        if cache is None:
            cache = KVCache.empty(cfg)
        self._check_cache(cache)
        start = cache.length
        if start + T > cfg.context:
            raise ValueError(
                f"{start} cached + {T} new tokens exceed the context of {cfg.context} tokens"
            )
        pos = torch.arange(start, start + T)
        # Key j (absolute position) is visible to query i iff j <= start + i.
        mask = torch.arange(start + T).unsqueeze(0) > pos.unsqueeze(1)  # [T, start+T]
        scale = 1.0 / math.sqrt(cfg.head_dim)
        H, KV, D, G = cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, cfg.group_size

        queries: List[torch.Tensor] = []
        x = self.embed[toks]
        for l, w in enumerate(self.layers):
            h = self._rmsnorm(x, w["attn_norm"])
            q = self._rope(F.linear(h, w["wq"]).view(T, H, D), pos)
            k = self._rope(F.linear(h, w["wk"]).view(T, KV, D), pos)
            v = F.linear(h, w["wv"]).view(T, KV, D)
            if self.cache_dtype != torch.float32:
                k = k.to(self.cache_dtype).float()
                v = v.to(self.cache_dtype).float()
            if return_queries:
                queries.append(q.clone())
            k_all = torch.cat((cache.keys[l], k), 0) if start else k
            v_all = torch.cat((cache.values[l], v), 0) if start else v
            cache.keys[l], cache.values[l] = k_all, v_all
            # [H, T, D] x [H, D, S] with query head h reading KV head h // G.
            kh = k_all.permute(1, 2, 0).repeat_interleave(G, dim=0)
            vh = v_all.permute(1, 0, 2).repeat_interleave(G, dim=0)
            scores = torch.matmul(q.permute(1, 0, 2), kh) * scale
            scores = scores.masked_fill(mask, float("-inf"))
            o = torch.matmul(torch.softmax(scores, dim=-1), vh)  # [H, T, D]
            x = x + F.linear(o.permute(1, 0, 2).reshape(T, H * D), w["wo"])
            h = self._rmsnorm(x, w["mlp_norm"])
            x = x + F.linear(F.silu(F.linear(h, w["w_gate"])) * F.linear(h, w["w_up"]), w["w_down"])
        logits = F.linear(self._rmsnorm(x, self.norm), self.head)
        if return_queries:
            return logits, cache, queries
        return logits, cache

    def decode(self, token: int, cache: KVCache) -> torch.Tensor:
        """One decoding step: feed ``token`` after ``cache`` (extended in place); returns logits [vocab]."""
        if isinstance(token, torch.Tensor):
            token = int(token.reshape(-1)[0]) if token.numel() == 1 else token
        if isinstance(token, (bytes, bytearray)) and len(token) == 1:
            token = token[0]
        if not isinstance(token, (int, np.integer)) or isinstance(token, bool):
            raise ValueError(f"decode takes one token (an int in [0, {self.config.vocab})), got {token!r}")
        logits, _ = self.prefill([int(token)], cache)
        return logits[0]

    @torch.no_grad()
    def generate(
        self,
        cache: KVCache,
        first_token: int,
        n: int,
        greedy: bool = True,
        temperature: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> bytes:
        """Generate ``n`` bytes after ``cache``, starting by feeding ``first_token``.

        ``first_token`` is the byte that follows the cached tokens (not yet in the cache;
        e.g. the argmax of the last prefill logits). Returns the ``n`` bytes produced after
        it (``first_token`` excluded). The cache is extended in place with ``first_token``
        and the first ``n - 1`` generated bytes. ``greedy=False`` samples at
        ``temperature`` with ``generator``.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return b""
        if cache.length + n > self.config.context:
            raise ValueError(
                f"{cache.length} cached + {n} generated tokens exceed the context of {self.config.context}"
            )
        out = bytearray()
        token = int(first_token)
        for i in range(n):
            logits = self.decode(token, cache)
            if greedy:
                token = int(torch.argmax(logits))
            else:
                if temperature <= 0:
                    raise ValueError(f"temperature must be > 0, got {temperature}")
                probs = torch.softmax(logits / temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            out.append(token)
        return bytes(out)

    @torch.no_grad()
    def eval_loss(self, tokens: Tokens) -> float:
        """Mean next-byte loss (nats per byte) of a window: byte t+1 predicted from bytes 0..t."""
        toks = _tokens_tensor(tokens, self.config.vocab)
        if toks.numel() < 2:
            raise ValueError("eval_loss needs at least two tokens")
        logits, _ = self.prefill(toks)
        return nll(logits[:-1], toks[1:])

    def new_cache(self) -> KVCache:
        """An empty :class:`KVCache` for this model."""
        return KVCache.empty(self.config)

    def _check_cache(self, cache: KVCache) -> None:
        cfg = self.config
        if not isinstance(cache, KVCache):
            raise ValueError(f"cache must be a KVCache, got {type(cache).__name__}")
        if len(cache.keys) != cfg.num_layers or len(cache.values) != cfg.num_layers:
            raise ValueError(f"cache has {len(cache.keys)} layers, the model {cfg.num_layers}")
        for l, (k, v) in enumerate(zip(cache.keys, cache.values)):
            for name, t in (("K", k), ("V", v)):
                if t.dim() != 3 or tuple(t.shape[1:]) != (cfg.num_kv_heads, cfg.head_dim):
                    raise ValueError(
                        f"cache layer {l} {name}: shape {tuple(t.shape)}, expected "
                        f"[tokens, {cfg.num_kv_heads}, {cfg.head_dim}]"
                    )
            if k.shape[0] != v.shape[0]:
                raise ValueError(f"cache layer {l}: K holds {k.shape[0]} tokens but V {v.shape[0]}")
        cache.check()
