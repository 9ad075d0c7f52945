"""qaqkv.Client against the real qaqkv-server binary on loopback."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import qaqkv

L, H, QH, D, BT = 3, 2, 4, 64, 32


def geometry(dtype: str = "fp16") -> qaqkv.Geometry:
    return qaqkv.Geometry(num_layers=L, num_kv_heads=H, num_q_heads=QH, head_dim=D, dtype=dtype,
                          block_tokens=BT)


def cache(tokens: int, seed: int, layout: str = "NHD") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (L, tokens, H, D) if layout == "NHD" else (L, H, tokens, D)
    return (rng.standard_normal(shape).astype(np.float16),
            rng.standard_normal(shape).astype(np.float16))


def keys_for(name: str, tokens: int) -> list[bytes]:
    return qaqkv.block_keys(name, "fp16", np.arange(tokens) % 256, BT)


@pytest.fixture(scope="module")
def client(server) -> qaqkv.Client:
    with qaqkv.Client(server.target, deadline=20) as c:
        yield c


def test_offload_lookup_load_round_trip(client: qaqkv.Client) -> None:
    k, v = cache(4 * BT, seed=1)
    keys = keys_for("round-trip", 4 * BT)
    assert client.lookup(keys) == 0
    r = client.offload(geometry(), keys, k, v, codec="fp16")
    assert (r.blocks_committed, r.pages) == (4, 4 * L)
    assert r.raw_bytes == 4 * L * 2 * BT * H * D * 2 and r.stored_bytes > r.raw_bytes
    assert client.lookup(keys) == 4
    assert client.lookup(keys, geometry(), "fp16") == 4
    assert client.lookup(keys, geometry(), "int8") == 0  # stored in another format
    ok, ov = np.zeros_like(k), np.zeros_like(v)
    seen: list[int] = []
    res = client.load(geometry(), keys, ok, ov, on_layer=seen.append)
    assert seen == [0, 1, 2] and res.pages == 4 * L
    assert np.array_equal(ok, k) and np.array_equal(ov, v)
    # Per-layer lists, a layer range, and rows after a prefix.
    part_k = [np.zeros((5 * BT, H, D), np.float16) for _ in range(L)]
    part_v = [np.zeros((5 * BT, H, D), np.float16) for _ in range(L)]
    client.load(geometry(), keys[1:3], part_k, part_v, first_token=BT, layer_begin=1,
                layer_end=2)
    assert np.array_equal(part_k[1][BT:3 * BT], k[1, BT:3 * BT])
    assert not part_k[0].any() and not part_k[2].any() and not part_k[1][:BT].any()


def test_torch_hnd_bf16_and_fp32_buffers(client: qaqkv.Client) -> None:
    torch = pytest.importorskip("torch")
    k, v = cache(2 * BT, seed=2, layout="HND")
    kt = torch.from_numpy(k.astype(np.float32)).bfloat16()
    vt = torch.from_numpy(v.astype(np.float32)).bfloat16()
    keys = keys_for("torch-hnd", 2 * BT)
    client.offload(geometry("bf16"), keys, kt, vt, codec="fp16", layout="HND")
    out_k, out_v = torch.zeros_like(kt), torch.zeros_like(vt)
    client.load(geometry("bf16"), keys, out_k, out_v, layout="HND")
    assert torch.equal(out_k, kt) and torch.equal(out_v, vt)
    f32_k = torch.zeros(L, H, 2 * BT, D)
    f32_v = torch.zeros(L, H, 2 * BT, D)
    client.load(geometry("bf16"), keys, f32_k, f32_v, layout="HND")
    assert torch.equal(f32_k, kt.float())


def test_load_layers_yields_each_layer_once_it_is_there(client: qaqkv.Client) -> None:
    k, v = cache(8 * BT, seed=3)
    keys = keys_for("layers", 8 * BT)
    client.offload(geometry(), keys, k, v, codec="qaq")
    ok, ov = np.zeros_like(k), np.zeros_like(v)
    layers = []
    for layer in client.load_layers(geometry(), keys, ok, ov):
        assert ok[layer].any() and ov[layer].any()  # already decoded when yielded
        layers.append(layer)
    assert layers == [0, 1, 2]
    err = np.linalg.norm((ok - k).astype(np.float32)) / np.linalg.norm(k.astype(np.float32))
    assert 0 < err < 0.2


def test_an_on_layer_exception_is_raised_after_the_load(client: qaqkv.Client) -> None:
    k, v = cache(BT, seed=4)
    keys = keys_for("callback-error", BT)
    client.offload(geometry(), keys, k, v, codec="fp16")

    def boom(layer: int) -> None:
        raise RuntimeError(f"callback failed at {layer}")

    with pytest.raises(RuntimeError, match="callback failed at 0"):
        client.load(geometry(), keys, np.zeros_like(k), np.zeros_like(v), on_layer=boom)


def test_sessions_offload_resume_list_touch_delete(client: qaqkv.Client) -> None:
    tokens = 3 * BT + 7
    k, v = cache(tokens, seed=5)
    keys = keys_for("session", tokens)
    assert len(keys) == 3
    stored = client.offload_session("chat-1", geometry(), keys, tokens, k, v, codec="fp16",
                                    ttl=600)
    assert (stored.blocks_committed, stored.pages) == (3, 3 * L + 1)
    assert stored.raw_bytes == tokens * L * H * D * 2 * 2
    info = client.get_session("chat-1")
    assert (info.token_count, info.committed_prefix, len(info.blocks)) == (tokens, 3, 3)
    assert info.codec == qaqkv.canonical_codec("fp16") and info.tail_bytes > 0
    assert info.geometry == geometry() and info.ttl == pytest.approx(600)
    pages = client.get_pages(keys)[1]
    assert stored.stored_bytes == sum(len(p) for _, _, p in pages) + info.tail_bytes
    assert "chat-1" in client.list_sessions()
    client.touch_session("chat-1")
    ok, ov = np.zeros_like(k), np.zeros_like(v)
    layers: list[int] = []
    resumed = client.resume_session("chat-1", ok, ov, on_layer=layers.append)
    assert resumed.token_count == tokens and layers == [0, 1, 2]
    assert np.array_equal(ok, k) and np.array_equal(ov, v)
    client.delete_session("chat-1")
    with pytest.raises(qaqkv.NotFound):
        client.get_session("chat-1")
    with pytest.raises(qaqkv.NotFound):
        client.resume_session("chat-1", ok, ov)


def test_raw_pages_and_stats(client: qaqkv.Client) -> None:
    k, v = cache(BT, seed=6)
    key = keys_for("raw", BT)
    pages = [(key[0], layer, qaqkv.encode(k[layer], v[layer], "int8")) for layer in range(L)]
    put = client.put_pages(geometry(), "int8", pages)
    assert put.committed_blocks == key and put.pages == L
    fmt, got = client.get_pages(key)
    assert fmt.codec == qaqkv.canonical_codec("int8") and fmt.geometry == geometry()
    assert got == pages
    stats = client.stats()
    assert [t.name for t in stats.tiers] == ["dram", "disk"]
    assert stats.tenant_blocks >= 1 and stats.total_bytes >= put.bytes and stats.version


def test_errors_keep_the_servers_code_and_message(client: qaqkv.Client, server) -> None:
    unknown = keys_for("never-stored", BT)
    k, v = cache(BT, seed=7)
    with pytest.raises(qaqkv.NotFound, match="block"):
        client.load(geometry(), unknown, k, v)
    with pytest.raises(qaqkv.InvalidArgument, match=r"keys\[0\]"):
        client.lookup([b"short"])
    three_heads = np.zeros((L, BT, 3, D), np.float16)
    with pytest.raises(qaqkv.InvalidArgument, match="k: 3 heads"):
        client.offload(geometry(), unknown, three_heads, three_heads)
    with pytest.raises(qaqkv.InvalidArgument, match=r"v\[0\]: shape"):
        client.offload(geometry(), unknown, k, three_heads)
    with pytest.raises(qaqkv.InvalidArgument, match="session_id"):
        client.get_session("has space")
    with pytest.raises(qaqkv.InvalidArgument, match="target"):
        qaqkv.Client()
    dead = qaqkv.Client("127.0.0.1:1", attempts=1, deadline=2)
    with pytest.raises(qaqkv.Unavailable):
        dead.lookup(unknown)


def wait_until_stopped(pid: int) -> None:
    """Until the kernel has stopped every thread of `pid` (SIGSTOP is delivered
    asynchronously, and a loaded machine may run a server thread meanwhile)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = [open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()[0]
                  for t in os.listdir(f"/proc/{pid}/task")]
        if all(s == "T" for s in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"server {pid} did not stop")


def test_the_gil_is_released_during_calls(make_server) -> None:
    # A stopped server holds the call until its deadline; meanwhile this
    # thread must keep running Python. Holding the GIL, the call would stall
    # it for the whole three seconds; released, its sleeps of 5 ms return
    # within a loaded machine's scheduling delay.
    stopped = make_server()
    c = qaqkv.Client(stopped.target, deadline=3, attempts=1)
    c.lookup(keys_for("gil", BT))  # connected while the server runs
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            c.lookup(keys_for("gil", BT))
        except BaseException as e:  # checked below
            outcome.append(e)

    stopped.process.send_signal(signal.SIGSTOP)
    try:
        wait_until_stopped(stopped.process.pid)
        worker = threading.Thread(target=call)
        start = time.monotonic()
        worker.start()
        gaps = []
        while worker.is_alive():
            t = time.monotonic()
            time.sleep(0.005)
            gaps.append(time.monotonic() - t)
        elapsed = time.monotonic() - start
    finally:
        stopped.process.send_signal(signal.SIGCONT)
    assert len(outcome) == 1 and isinstance(outcome[0], qaqkv.DeadlineExceeded), outcome
    assert elapsed > 2.5 and max(gaps) < 1.5, (elapsed, max(gaps))


def test_concurrent_calls_from_threads(client: qaqkv.Client) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            k, v = cache(4 * BT, seed=100 + i)
            keys = keys_for(f"thread-{i}", 4 * BT)
            client.offload(geometry(), keys, k, v, codec="fp16")
            ok, ov = np.zeros_like(k), np.zeros_like(v)
            client.load(geometry(), keys, ok, ov)
            assert np.array_equal(ok, k) and np.array_equal(ov, v)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_a_closed_client_refuses_calls(server) -> None:
    c = qaqkv.Client(server.target)
    c.close()
    with pytest.raises(qaqkv.InvalidArgument, match="closed"):
        c.stats()


def test_tokens_pick_the_tenant_and_a_missing_one_is_unauthenticated(make_server,
                                                                     tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("secret-a tenant-a\nsecret-b tenant-b\n")
    s = make_server(f"--auth-tokens={tokens}")
    a = qaqkv.Client(s.target, token="secret-a")
    b = qaqkv.Client(s.target, token="secret-b")
    k, v = cache(BT, seed=9)
    keys = keys_for("tenants", BT)
    a.offload(geometry(), keys, k, v, codec="fp16")
    assert a.lookup(keys) == 1 and b.lookup(keys) == 0  # tenants do not share blocks
    assert a.stats().tenant_blocks == 1 and b.stats().tenant_blocks == 0
    with pytest.raises(qaqkv.Unauthenticated):
        qaqkv.Client(s.target).lookup(keys)
    with pytest.raises(qaqkv.Unauthenticated):
        qaqkv.Client(s.target, token="wrong").lookup(keys)


def test_a_session_tail_takes_the_largest_q2_of_its_layers(client: qaqkv.Client) -> None:
    tokens = BT + 20
    k, v = cache(tokens, seed=10)
    keys = keys_for("tail-q2", tokens)
    client.offload_session("tail-default", geometry(), keys, tokens, k, v, codec="qaq")
    q2 = [np.full(H, 1.0, np.float32)] * (L - 1) + [np.full(H, 80.0, np.float32)]
    client.offload_session("tail-q2", geometry(), keys, tokens, k, v, codec="qaq", q2=q2)
    # Larger queries need finer key steps: the last layer's Q2 of 80 applies
    # to the whole stacked tail page, which grows.
    assert (client.get_session("tail-q2").tail_bytes >
            client.get_session("tail-default").tail_bytes)
