"""python3 -m qaqkv.chat: a conversation whose every turn runs in a fresh
process that resumes the session from the real qaqkv-server, against a
process that never offloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qaqkv
from qaqkv import chat

pytest.importorskip("torch")


def chat_cmd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qaqkv.chat", *args], env=dict(os.environ),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def report(server, tmp_path_factory) -> dict:
    """fp16 and qaq over three turns against the module's server."""
    out = tmp_path_factory.mktemp("chat") / "report.json"
    p = chat_cmd("run", "--server", server.target, "--codecs", "fp16", "qaq", "--turns", "3",
                 "--generate", "32", "--json-out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "bit-identical logits, same bytes" in p.stdout
    return json.loads(out.read_text())


def by_codec(report: dict, codec: str) -> dict:
    name = qaqkv.canonical_codec(codec)
    return next(c for c in report["codecs"] if c["codec"] == name)


def test_fp16_resume_is_bit_identical_to_a_process_that_kept_its_cache(report: dict) -> None:
    fp16 = by_codec(report, "fp16")
    assert fp16["identical"] and fp16["match"] == 1.0
    assert len(fp16["turns"]) == 3
    for t in fp16["turns"]:
        assert t["logits_identical"] and t["cache_identical"] and t["bytes_identical"], t
        assert t["max_abs_logit_diff"] == 0.0 and t["loss"] == t["ref_loss"]
    resumed = fp16["turns"][1:]
    assert all(t["resume_seconds"] > 0 and 0 < t["layer0_seconds"] <= t["resume_seconds"]
               and t["recompute_seconds"] > 0 for t in resumed)
    # The prefix spans blocks of 64 and a tail: 3 turns of ~85 + 32 bytes.
    assert fp16["tokens"] == sum(len(u) for u in chat.CONVERSATION[:3]) + 3 * 32
    assert fp16["tokens"] > 2 * 64


def test_qaq_stores_fewer_bytes_and_stays_close(report: dict) -> None:
    fp16, qaq = by_codec(report, "fp16"), by_codec(report, "qaq")
    assert qaq["tokens"] == fp16["tokens"]
    assert qaq["stored_bytes"] < fp16["stored_bytes"] / 2 and qaq["ratio"] > 2
    assert 0.99 < fp16["ratio"] <= 1.0
    for t in qaq["turns"][1:]:
        assert abs(t["loss"] - t["ref_loss"]) < 0.1 and t["max_abs_logit_diff"] > 0
    assert qaq["turns"][0]["logits_identical"]  # nothing resumed yet


def test_resume_of_a_deleted_or_unknown_session_fails_clearly(report: dict, server,
                                                              tmp_path: Path) -> None:
    session = by_codec(report, "fp16")["session"]
    transcript = tmp_path / "t.bin"
    with qaqkv.Client(server.target) as c:
        info = c.get_session(session)
        transcript.write_bytes(b"x" * info.token_count)
        c.delete_session(session)
    for sid in (session, "never-saved"):
        p = chat_cmd("turn", "--server", server.target, "--session", sid, "--codec", "fp16",
                     "--user", "hello", "--generate", "4", "--transcript", str(transcript),
                     "--resume")
        assert p.returncode == 1, p.stderr
        assert f"session '{sid}' is not on the server" in p.stderr
        assert "without --resume" in p.stderr and "Traceback" not in p.stderr


def test_a_bad_codec_exits_2_naming_it(server) -> None:
    p = chat_cmd("run", "--server", server.target, "--codecs", "fp16", "nosuchcodec")
    assert p.returncode == 2 and "unknown codec 'nosuchcodec'" in p.stderr, p.stderr
    p = chat_cmd("turn", "--server", server.target, "--session", "s", "--codec", "int3",
                 "--user", "hi", "--generate", "1")
    assert p.returncode == 2 and "unknown codec 'int3'" in p.stderr, p.stderr


def test_run_starts_its_own_memory_only_server(tmp_path: Path) -> None:
    from conftest import server_binary

    binary = server_binary()
    out = tmp_path / "r.json"
    p = chat_cmd("run", "--server-binary", binary, "--codecs", "fp16", "--turns", "2",
                 "--generate", "8", "--json-out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "started a memory-only qaqkv-server" in p.stdout
    assert json.loads(out.read_text())["codecs"][0]["identical"]


def test_a_difference_from_the_reference_is_caught() -> None:
    def rec(gen: bytes, sha: str) -> dict:
        return {"generated_hex": gen.hex(), "logits_sha256": sha, "step_logits_sha256": "s",
                "cache_sha256": "c", "loss": 1.0, "logits": np.zeros((2, 4), np.float32),
                "stored_bytes": 10, "ratio": 1.0, "tokens": 4, "offload_seconds": 0.0,
                "raw_bytes": 10, "session": "s"}

    ref = [rec(b"ab", "x"), rec(b"cd", "y")]
    assert chat.compare("fp16", [rec(b"ab", "x"), rec(b"cd", "y")], ref)["identical"]
    logits = chat.compare("fp16", [rec(b"ab", "x"), rec(b"cd", "z")], ref)
    assert not logits["identical"] and logits["match"] == 1.0
    text = chat.compare("fp16", [rec(b"ab", "x"), rec(b"ce", "y")], ref)
    assert not text["identical"] and text["match"] == 0.75
