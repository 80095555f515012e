"""What every connection after ``ready`` shares: receive, route, a control task.

A session is a pump of small tasks, not one loop. The receive task only
decodes and routes: control messages (``interrupt``, ``ping``, ``bye``,
settings, questions) go to the control inbox and are handled by the control
task, which never waits behind frames, the detector, speech recognition or
the model; media goes to its own slot or inbox (``UserSession``). Each inbox
is bounded: a client that floods one gets a ``rate-limited`` error and loses
only its own excess.

Every send goes through the session's ``Link`` (a time limit per send). Only
``server/app.py`` opens and closes connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from websockets.asyncio.server import ServerConnection

from protocol import Bye, ErrorCode, Message, Ping, Pong, ProtocolError, decode
from protocol import Error as ErrorMsg
from server.auth import Account
from server.context import ServerContext
from server.link import Link, LinkClosed
from server.ratelimit import RateLimiter, SessionLimiters, SessionLimits

log = logging.getLogger("seealoud.session")

CONTROL_INBOX = 64
MESSAGES_PER_S = 300
"""Every message a client sends, all kinds together: a phone sends about 80 a second
(frames, 20 ms audio chunks, control); a flood is read at this pace."""
MESSAGES_BURST = 600
Deferred = Callable[[], Awaitable[None]]


class SessionClosed(Exception):
    """The client said ``bye``; the connection should close normally."""


class BaseSession:
    """Receive, route and control for one connection; subclasses add their pipelines."""

    role = ""

    def __init__(
        self, *, ctx: ServerContext, account: Account, session_id: str, link: Link, peer: str = ""
    ) -> None:
        self.ctx = ctx
        self.account = account
        self.id = session_id
        self.link = link
        self.peer = peer
        self.control: asyncio.Queue[Message | Deferred] = asyncio.Queue(CONTROL_INBOX)
        self.limits = SessionLimiters.build(SessionLimits())
        self._flood_reported = 0.0
        self._limit_reported: dict[str, float] = {}
        self.resume_token = ""
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._pace = RateLimiter(MESSAGES_PER_S, MESSAGES_BURST)
        self._paced = False

    # --- sending ---------------------------------------------------------------

    async def send(self, message: Message) -> None:
        await self.link.send(message)

    async def send_error(
        self, code: ErrorCode | str, message: str, *, ref: str | None = None, fatal: bool = False
    ) -> None:
        self.ctx.metrics.error(str(code))
        await self.send(ErrorMsg(code=str(code), message=message, fatal=fatal, ref=ref))

    async def admitted(self, kind: str, *, cost: float = 1.0, ref: str | None = None) -> bool:
        """Whether this client may send one more ``kind`` now (``frames``, ``audio``,
        ``questions``, ``settings``); if not, the message is dropped, counted, and the
        client told (at most once a second per kind)."""
        if self.limits.allow(kind, time.monotonic(), cost):
            return True
        await self.limited(kind, f"too many {kind} at once; some were dropped", ref=ref)
        return False

    async def limited(self, kind: str, message: str, *, ref: str | None = None) -> None:
        """A message refused by the ``kind`` limit: counted, and the client told
        ``rate-limited`` with ``message``, at most once a second per kind."""
        now = time.monotonic()
        self.ctx.metrics.rate_limited_by(kind)
        if now - self._limit_reported.get(kind, 0.0) >= 1.0:
            self._limit_reported[kind] = now
            await self.send_error(ErrorCode.RATE_LIMITED, message, ref=ref)

    def later(self, action: Deferred) -> None:
        """Have the control task run ``action`` (used by callbacks that must not block)."""
        self._to_control(action)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run slow work (a text reading) beside the control task, so ping, Stop and
        bye never wait for it. Cancelled when the session ends; a crash is logged with
        its traceback and ends only that piece of work."""
        task = asyncio.create_task(work, name=f"{self.id}:{name}")
        self._side_tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self._side_tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("session %s: %s crashed", self.id, name, exc_info=t.exception())

        task.add_done_callback(finished)
        return task

    # --- tasks -------------------------------------------------------------------

    def tasks(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """The session's loops besides receive and control."""
        return []

    async def run(self, ws: ServerConnection) -> None:
        """Run until the client leaves (``bye``), the connection drops, or a task crashes
        (re-raised, so the server logs it and closes with 1011)."""
        loops = [self._receive(ws), self._control(), *(run() for run in self.tasks())]
        tasks = {asyncio.create_task(loop, name=f"{self.id}") for loop in loops}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            tasks |= self._side_tasks
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.closed()

    def closed(self) -> None:
        """The connection ended (any way): release what the session holds."""

    async def _receive(self, ws: ServerConnection) -> None:
        text_limit = self.ctx.config.max_text_bytes
        async for raw in ws:
            # A client sending faster than any phone does is read more slowly: the rest
            # waits in its own socket (TCP pushes back on it), not in anyone's CPU time.
            wait = self._pace.retry_after(time.monotonic())
            if wait > 0:
                if not self._paced:
                    self._paced = True
                    self.ctx.metrics.rate_limited_by("messages")
                    log.warning(
                        "session %s: more than %d messages a second; reading slower",
                        self.id,
                        MESSAGES_PER_S,
                    )
                await asyncio.sleep(wait)  # pacing the reader, not synchronisation
            self._pace.allow(time.monotonic())
            started = time.perf_counter()
            try:
                message = decode(raw, max_bytes=text_limit if isinstance(raw, str) else None)
            except ProtocolError as exc:
                self.ctx.metrics.bad_messages += 1
                await self.send_error(exc.code, exc.message, ref=exc.ref)
                continue
            if isinstance(message, Bye):
                # Everything the client sent before its bye is answered first: the
                # control task closes the session when it reaches the bye.
                self._to_control(message)
                await asyncio.Future()  # read no more; cancelled when the session ends
            await self.route(message, time.monotonic())
            self.ctx.metrics.ingest.add(time.perf_counter() - started)

    async def route(self, message: Message, received_at: float) -> None:
        """Put one decoded message where it is handled. Awaits only replies about the
        message itself (a refusal), each bounded by the send time limit."""
        self._to_control(message)

    def _to_control(self, item: Message | Deferred) -> None:
        try:
            self.control.put_nowait(item)
        except asyncio.QueueFull:
            self.ctx.metrics.rate_limited_by("control")
            now = time.monotonic()
            if now - self._flood_reported > 1.0:  # one log line a second, not one a message
                self._flood_reported = now
                log.warning("session %s: control inbox full; dropping messages", self.id)
                self._tell_dropped()

    def _tell_dropped(self) -> None:
        """The client is told its messages were dropped (once a second), beside the
        control task: the inbox it would queue in is the one that is full."""

        async def tell() -> None:
            with contextlib.suppress(LinkClosed):
                await self.send_error(
                    ErrorCode.RATE_LIMITED, "too many messages at once; some were dropped"
                )

        self.spawn(tell(), "tell-dropped")

    async def _control(self) -> None:
        while True:
            item = await self.control.get()
            if isinstance(item, Message):
                await self.handle_control(item)
            else:
                await item()

    async def handle_control(self, message: Message) -> None:
        match message:
            case Ping():
                await self.send(Pong(t=message.t, id=message.id))
            case Bye():
                raise SessionClosed(message.reason)
            case _:
                await self.send_error(
                    ErrorCode.UNEXPECTED_MESSAGE,
                    f"{message.wire_type()} is not accepted in a {self.role} session",
                    ref=message.id,
                )
