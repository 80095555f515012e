"""The outbound side of one websocket: every send has a time limit.

A phone that stops reading (a dead network, a frozen tab, a hostile client)
fills its send buffer; an unbounded ``send`` would then wait forever, and so
would whoever called it: the caregiver changing that user's settings, the
settings watcher, shutdown. Here a send that cannot complete within
``timeout_s`` marks the link broken and aborts the connection at once (no
closing handshake to wait for): the client is closed within the time limit,
with a logged reason, and nobody else waits on it.
"""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from protocol import Message, encode

log = logging.getLogger("seealoud.link")


class LinkClosed(Exception):
    """The connection is gone (closed, or aborted because it stopped reading)."""


class Link:
    """Timed sends on one connection; see the module docstring."""

    def __init__(self, ws: ServerConnection, *, timeout_s: float, label: str = "") -> None:
        self.ws = ws
        self.timeout_s = timeout_s
        self.label = label
        self.broken = False
        self.sent = 0

    async def send(self, message: Message) -> None:
        """Send one message or raise ``LinkClosed``; never waits longer than the limit."""
        if self.broken:
            raise LinkClosed("connection aborted")
        data = encode(message)
        try:
            await asyncio.wait_for(self.ws.send(data), self.timeout_s)
        except TimeoutError:
            self.abort(f"it did not read for {self.timeout_s:g} s")
            raise LinkClosed("send timed out") from None
        except ConnectionClosed as exc:
            raise LinkClosed("connection closed") from exc
        self.sent += 1

    def abort(self, why: str) -> None:
        """Drop the connection now, without a closing handshake."""
        if self.broken:
            return
        self.broken = True
        log.warning("closing %s: %s", self.label or "a connection", why)
        transport = self.ws.transport
        if transport is not None:
            transport.abort()
