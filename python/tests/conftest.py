"""Fixtures of the Python tests: the real qaqkv-server binary on a loopback
port, with RocksDB in a temporary directory (QAQKV_SERVER_BINARY, set by
ctest; tests that need it are skipped without it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from qaqkv._server import ServerProcess


# A started qaqkv-server; `target` is its "127.0.0.1:port".
Server = ServerProcess


def server_binary() -> str:
    binary = os.environ.get("QAQKV_SERVER_BINARY", "")
    if not binary or not os.access(binary, os.X_OK):
        pytest.skip("QAQKV_SERVER_BINARY is not set (run through ctest)")
    return binary


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One server (disk mode, RocksDB in a temporary directory) per test module."""
    with tempfile.TemporaryDirectory(prefix="qaqkv-pytest-") as d:
        s = Server(server_binary(), Path(d))
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture
def make_server() -> Iterator:
    """Starts servers with extra flags; all are stopped at the test's end."""
    started: list[Server] = []
    dirs: list[tempfile.TemporaryDirectory] = []

    def start(*args: str) -> Server:
        d = tempfile.TemporaryDirectory(prefix="qaqkv-pytest-")
        dirs.append(d)
        s = Server(server_binary(), Path(d.name), args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
    for d in dirs:
        d.cleanup()
