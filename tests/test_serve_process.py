"""`seealoud serve` as a real process: it starts, serves, and SIGTERM closes sessions 1001."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

import protocol as p
from server.auth import UserStore
from server.db import connect as db_connect
from tests.server_process import ServeProcess


@pytest.mark.asyncio
async def test_sigterm_closes_sessions_with_1001(tmp_path: Path) -> None:
    """On default settings: the server is healthy at once while the vision model loads (or
    fails to, offline), and SIGTERM does not wait for a model load to finish."""
    db = tmp_path / "s.db"
    token = UserStore(db_connect(db)).add("alice")
    server = ServeProcess(db, log=tmp_path / "server.log")
    try:
        await asyncio.to_thread(server.wait_healthy)
        ws = await connect(server.ws_url)
        await ws.send(p.encode(p.Hello(protocol=1, token=token)))
        assert isinstance(p.decode(await ws.recv()), p.Ready)
        server.proc.send_signal(signal.SIGTERM)
        bye = p.decode(await asyncio.wait_for(ws.recv(), 10))
        assert isinstance(bye, p.Bye) and bye.reason == "server-shutdown"
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1001
        assert await asyncio.to_thread(server.proc.wait, 10) == 0
    finally:
        server.stop()
    log = server.log.read_text()
    assert "session" in log and token.rsplit("_", 1)[1] not in log
