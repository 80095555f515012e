"""From ``hello`` to a session: version, token, role, resume.

The first message must be ``hello`` within ``hello_timeout_s``. A refused
token answers ``auth-failed`` and closes with 4001 (``CLOSE_AUTH_REFUSED``):
the only close that tells a phone to forget its token. Everything else that
goes wrong here (slow network, malformed hello, too many attempts) closes
with 1008 and the token stays good. Resume tokens are one-time and expire
after ``RESUME_TTL_S``; what a session left for its resume (the narrator's
memory, hands-free listening) comes back with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from protocol import (
    CLOSE_AUTH_REFUSED,
    PROTOCOL_VERSION,
    ErrorCode,
    Hello,
    ProtocolError,
    decode,
    encode,
)
from protocol import Error as ErrorMsg
from server.auth import Account
from server.context import ServerContext

log = logging.getLogger("seealoud.handshake")

RESUME_TTL_S = 300.0
MAX_RESUMABLE = 10_000


@dataclass(kw_only=True)
class Resumable:
    """What a closed session left for a reconnect within the window."""

    session_id: str
    user: str
    state: Any
    expires_at: float


class ResumeRegistry:
    """One-time resume tokens, bounded in number and age."""

    def __init__(self, *, ttl_s: float = RESUME_TTL_S, capacity: int = MAX_RESUMABLE) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._items: dict[str, Resumable] = {}

    def put(self, token: str, session_id: str, user: str, state: Any) -> None:
        self._purge()
        while len(self._items) >= self.capacity:
            del self._items[next(iter(self._items))]  # the oldest goes first
        self._items[token] = Resumable(
            session_id=session_id, user=user, state=state, expires_at=time.monotonic() + self.ttl_s
        )

    def take(self, token: str | None, user: str) -> Resumable | None:
        """The resumable state for ``token`` if it is live and ``user``'s (then used up;
        someone else's attempt with it neither gets it nor spends it)."""
        self._purge()
        if token is None:
            return None
        item = self._items.get(token)
        if item is None or item.user != user:
            return None
        return self._items.pop(token)

    def forget_user(self, user: str) -> None:
        self._items = {k: v for k, v in self._items.items() if v.user != user}

    def _purge(self) -> None:
        now = time.monotonic()
        self._items = {k: v for k, v in self._items.items() if v.expires_at > now}


class HandshakeGate:
    """How many connections from one address are between connect and ``hello``: a
    bounded few, so idle sockets from one place cannot use up the server's files."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self._waiting: dict[str, int] = {}

    def enter(self, peer: str) -> bool:
        """Whether ``peer`` may start one more handshake (then call ``leave``)."""
        waiting = self._waiting.get(peer, 0)
        if waiting >= self.per_address:
            return False
        self._waiting[peer] = waiting + 1
        return True

    def leave(self, peer: str) -> None:
        left = self._waiting.pop(peer, 1) - 1
        if left > 0:
            self._waiting[peer] = left


async def refuse(
    ws: ServerConnection, code: ErrorCode, text: str, close: int = CloseCode.POLICY_VIOLATION
) -> None:
    """Send a fatal error and close, never waiting on a client that does not read."""
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        await asyncio.wait_for(ws.send(encode(ErrorMsg(code=code, message=text, fatal=True))), 5)
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        await asyncio.wait_for(ws.close(close, code.value), 5)


async def handshake(
    ws: ServerConnection, ctx: ServerContext, peer: str
) -> tuple[Account, Hello] | None:
    """Read ``hello`` and authenticate; ``None`` after refusing (and closing)."""
    cfg = ctx.config
    try:
        raw = await asyncio.wait_for(ws.recv(), cfg.hello_timeout_s)
    except TimeoutError:
        await refuse(ws, ErrorCode.NOT_AUTHENTICATED, "no hello received in time")
        return None
    try:
        hello = decode(raw, max_bytes=cfg.max_text_bytes)
    except ProtocolError as exc:
        await refuse(ws, exc.code, exc.message)
        return None
    if not isinstance(hello, Hello):
        await refuse(ws, ErrorCode.NOT_AUTHENTICATED, "the first message must be hello")
        return None
    if hello.protocol != PROTOCOL_VERSION:
        await refuse(
            ws,
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol {hello.protocol} is not supported; this server speaks {PROTOCOL_VERSION}",
            CloseCode.PROTOCOL_ERROR,
        )
        return None
    now = time.monotonic()
    wait = ctx.login_limiter.retry_after(peer, now)
    if wait > 0:
        ctx.metrics.rate_limited += 1
        await refuse(
            ws, ErrorCode.RATE_LIMITED, f"too many failed logins; try again in {wait:.0f} s"
        )
        return None
    account = await ctx.off_loop(ctx.accounts.authenticate, hello.token)
    if account is None:
        ctx.metrics.auth_failures += 1
        if ctx.login_limiter.failed(peer, now):
            log.warning("authentication failed from %s", peer)
        await refuse(ws, ErrorCode.AUTH_FAILED, "the token is not valid", CLOSE_AUTH_REFUSED)
        return None
    ctx.login_limiter.succeeded(peer)
    return account, hello
