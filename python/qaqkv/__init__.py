"""qaqkv: KV-cache offload for LLM inference workers.

The client of the qaqkv cache service, and the project's page codec (QAQ,
int4, int8, kivi2, fp16) for local use::

    import qaqkv
    client = qaqkv.Client("127.0.0.1:7070")
    geometry = qaqkv.Geometry(num_layers=32, num_kv_heads=8, num_q_heads=32,
                              head_dim=128, dtype="bf16", block_tokens=256)
    keys = qaqkv.block_keys("llama3-8b", "qaq", token_ids, 256)
    cached = client.lookup(keys)
    for layer in client.load_layers(geometry, keys[:cached], k_cache, v_cache):
        ...  # layer `layer` is in the cache: run it
    client.offload(geometry, keys[cached:], k_cache, v_cache,
                   first_token=cached * 256)

Errors are qaqkv.Error subclasses, one per status code (qaqkv.NotFound,
qaqkv.InvalidArgument, ...). See help(qaqkv.Client) and the README.
"""

from qaqkv.errors import (Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded, Error,
                          FailedPrecondition, Internal, InvalidArgument, NotFound, OutOfRange,
                          PermissionDenied, ResourceExhausted, Unauthenticated, Unavailable,
                          Unimplemented, Unknown)
from qaqkv.client import (BlockFormat, Client, Geometry, LoadResult, OffloadResult, PutResult,
                          ServerStats, SessionInfo, TierStats)
from qaqkv.codec import (PageInfo, PageStats, block_keys, canonical_codec, cpu_features, decode,
                         encode, inspect, page_stats, q2, verify, window_stats)

__all__ = [
    "Client", "Geometry", "OffloadResult", "LoadResult", "SessionInfo", "ServerStats",
    "TierStats", "PutResult", "BlockFormat", "PageInfo", "PageStats", "block_keys",
    "canonical_codec", "encode", "decode", "inspect", "verify", "page_stats", "window_stats",
    "q2", "cpu_features", "Error", "Cancelled", "Unknown", "InvalidArgument",
    "DeadlineExceeded", "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
    "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable",
    "DataLoss", "Unauthenticated",
]
