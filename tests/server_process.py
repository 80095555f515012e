"""`seealoud serve` as a real process, for the tests that need one (signals, a browser)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """A server process on a free loopback port, its log in a file."""

    def __init__(self, db: Path, *args: str, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.db = db
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.log = log
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.cli",
                "serve",
                "--db",
                str(db),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *args,
            ],
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )

    def get_json(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + path, timeout=5) as resp:
            return dict(json.load(resp))

    def get_metrics(self) -> dict[str, float]:
        """The ``/metrics`` page (Prometheus text) as plain numbers by name."""
        from server.metrics import read_metrics

        with urllib.request.urlopen(self.base + "/metrics", timeout=5) as resp:
            return read_metrics(resp.read().decode())

    def wait_until(self, check: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``check`` (connection errors count as not yet) until true; fail with the log."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server not {what}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)  # polling a starting process; bounded by the deadline

    def wait_healthy(self, timeout: float = 30) -> None:
        self.wait_until(
            lambda: self.get_json("/readyz") is not None, timeout=timeout, what="healthy"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
