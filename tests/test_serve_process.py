"""`seealoud serve` as a real process: it starts, serves, and SIGTERM closes sessions 1001."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

import protocol as p
from server.auth import UserStore
from server.db import connect as db_connect


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)  # polling a starting process; bounded by the deadline
    raise AssertionError("server did not become healthy")


@pytest.mark.asyncio
async def test_sigterm_closes_sessions_with_1001(tmp_path: Path) -> None:
    """On default settings: the server is healthy at once while the vision model loads (or
    fails to, offline), and SIGTERM does not wait for a model load to finish."""
    db = tmp_path / "s.db"
    token = UserStore(db_connect(db)).add("alice")
    port = free_port()
    proc = subprocess.Popen(
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
            str(port),
        ],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await asyncio.to_thread(wait_healthy, port, proc)
        ws = await connect(f"ws://127.0.0.1:{port}/ws")
        await ws.send(p.encode(p.Hello(protocol=1, token=token)))
        assert isinstance(p.decode(await ws.recv()), p.Ready)
        proc.send_signal(signal.SIGTERM)
        bye = p.decode(await asyncio.wait_for(ws.recv(), 10))
        assert isinstance(bye, p.Bye) and bye.reason == "server-shutdown"
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1001
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    log = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert "session" in log and token.rsplit("_", 1)[1] not in log
