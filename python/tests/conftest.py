"""Fixtures of the Python tests: the real qaqkv-server binary on a loopback
port, with RocksDB in a temporary directory (QAQKV_SERVER_BINARY, set by
ctest; tests that need it are skipped without it)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest


class Server:
    """A started qaqkv-server; `target` is its "127.0.0.1:port"."""

    def __init__(self, binary: str, directory: Path, *args: str) -> None:
        self.directory = directory
        port_file = directory / "port"
        self.log = directory / "server.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [binary, "--listen=127.0.0.1:0", f"--port-file={port_file}",
                 f"--data-dir={directory / 'db'}", *args],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"qaqkv-server did not start: {self.log.read_text()}")
            time.sleep(0.02)
        self.target = f"127.0.0.1:{port_file.read_text().strip()}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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
        s = Server(server_binary(), Path(d.name), *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
    for d in dirs:
        d.cleanup()
