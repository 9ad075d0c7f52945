"""A qaqkv-server child process on a free loopback port, for the chat demo
and the tests: started with --port-file, waited for until it serves, and
stopped with SIGTERM (then SIGKILL after 30 s)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence


class ServerProcess:
    """Runs `binary` with its data and log in `directory` (which the caller
    owns); `target` is "127.0.0.1:port" once the constructor returns."""

    def __init__(self, binary: str, directory: Path, args: Sequence[str] = (),
                 timeout: float = 60.0) -> None:
        self.directory = Path(directory)
        self.log = self.directory / "server.log"
        port_file = self.directory / "port"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [binary, "--listen=127.0.0.1:0", f"--port-file={port_file}",
                 f"--data-dir={self.directory / 'db'}", *args],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"qaqkv-server ({binary}) did not start: "
                                   f"{self.log.read_text(errors='replace')}")
            time.sleep(0.02)
        self.target = f"127.0.0.1:{port_file.read_text().strip()}"

    def stop(self) -> None:
        """SIGTERM (the server drains and exits), SIGKILL if it takes over 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
