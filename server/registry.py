"""The live sessions of one server: who is connected, caps, resume, opening and closing.

Opening checks the caps (sessions per account, per address), takes a resume
token's saved state, builds the right session class for the account's role and
sends ``ready``; closing keeps a phone's state for the resume window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection

from protocol import CLOSE_AUTH_REFUSED, PROTOCOL_VERSION, ErrorCode, Hello, Limits, Ready
from runtime import WorkerBusy
from server.auth import Account
from server.caregiver_session import CaregiverSession
from server.context import ServerContext
from server.handshake import ResumeRegistry, refuse
from server.link import Link
from server.session import BaseSession
from server.user_session import UserSession, UserState

log = logging.getLogger("seealoud.server")

TAKE_OVER_S = 2.0
"""How long a resume waits for the connection it replaces to hand over its state."""
END_ACCOUNT_S = 2.0
"""How long a removed account's session may take to hear why before it is dropped."""


class Registry:
    """See the module docstring."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.sessions: dict[str, BaseSession] = {}
        self.resumable = ResumeRegistry()
        # Logins past the caps but not yet live: counted so that many hellos at once
        # on one token cannot all pass the check while the first waits on the database.
        self._opening_by_account: Counter[str] = Counter()
        self._opening_by_peer: Counter[str] = Counter()
        self._gone: dict[str, asyncio.Event] = {}  # sessions being taken over by a resume

    async def end_account(self, name: str, why: str) -> None:
        """The account was removed or its token replaced: its sessions end now."""
        self.resumable.forget_user(name)
        await self._end([s for s in self.sessions.values() if s.account.name == name], why)
        self.resumable.forget_user(name)  # closing them put their state up for resuming

    async def _end(self, sessions: list[BaseSession], why: str) -> None:
        """Refuse these sessions' token and drop them, in parallel and bounded (a client
        that stopped reading delays nobody); their slots are free on return."""

        async def end(session: BaseSession) -> None:
            log.info("session %s closed: account %s", session.id, why)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    refuse(
                        session.link.ws,
                        ErrorCode.AUTH_FAILED,
                        "this account's token is no longer valid",
                        CLOSE_AUTH_REFUSED,
                    ),
                    END_ACCOUNT_S,
                )
            if session.link.ws.state.name != "CLOSED":
                session.link.abort(f"account {why}")

        await asyncio.gather(*(end(s) for s in sessions), return_exceptions=True)
        for session in sessions:  # whatever its handler is doing, the slot is free now
            self.closed(session)

    async def watch_accounts(self, every_s: float = 1.0) -> None:
        """Close the live sessions of an account removed or given a new token (by the CLI,
        in another process) within ``every_s``."""
        accounts = self.ctx.accounts
        seen = await self.ctx.off_loop(accounts.last_account_change_id)
        while True:
            await asyncio.sleep(every_s)  # polling interval, not synchronisation
            try:
                changes = await self.ctx.off_loop(accounts.account_changes_since, seen)
            except (sqlite3.Error, WorkerBusy):  # a locked or busy database: next round
                log.warning("account watcher could not read the database; retrying")
                continue
            for change in changes:
                seen = max(seen, change.id)
                if change.ends_sessions:
                    await self.end_account(change.name, change.event)

    def user_session(self, name: str) -> UserSession:
        for session in self.sessions.values():
            if isinstance(session, UserSession) and session.account.name == name:
                return session
        raise LookupError(f"{name} has no live session")

    async def open(
        self, ws: ServerConnection, account: Account, hello: Hello, peer: str
    ) -> BaseSession | None:
        """Check the caps, build the session and send ``ready``; ``None`` if refused."""
        cfg = self.ctx.config
        if hello.resume:
            await self._take_over(hello.resume, account.name)
        # Sessions on the account's replaced token end before the new token is counted
        # against them: the account watcher polls once a second, and a verification pass
        # logging in at once with a fresh token was refused for the old token's sessions.
        stale = [
            s
            for s in self.sessions.values()
            if s.account.name == account.name and s.account.token_id != account.token_id
        ]
        if stale:
            await self._end(stale, "token-reset")
        mine = sum(1 for s in self.sessions.values() if s.account.name == account.name)
        mine += self._opening_by_account[account.name]
        if mine >= cfg.max_sessions_per_account:
            await refuse(
                ws,
                ErrorCode.TOO_MANY_SESSIONS,
                f"this account already has {mine} live sessions; close one first",
            )
            return None
        here = sum(1 for s in self.sessions.values() if s.peer == peer)
        if here + self._opening_by_peer[peer] >= cfg.max_sessions_per_address:
            await refuse(ws, ErrorCode.TOO_MANY_SESSIONS, "too many sessions from this address")
            return None
        self._opening_by_account[account.name] += 1
        self._opening_by_peer[peer] += 1
        opening = True

        def live() -> None:
            """No longer opening: live (counted in ``sessions`` from now) or refused.
            Counted in both while ``ready`` went out, a slow send let two hellos at
            once refuse a third within the cap (a load benchmark on a busy machine)."""
            nonlocal opening
            if not opening:
                return
            opening = False
            for table, key in (
                (self._opening_by_account, account.name),
                (self._opening_by_peer, peer),
            ):
                table[key] -= 1
                if table[key] <= 0:
                    del table[key]

        try:
            return await self._open(ws, account, hello, peer, live)
        finally:
            live()

    async def _open(
        self,
        ws: ServerConnection,
        account: Account,
        hello: Hello,
        peer: str,
        live: Callable[[], None],
    ) -> BaseSession | None:
        cfg = self.ctx.config
        resumed = self.resumable.take(hello.resume, account.name)
        session_id = resumed.session_id if resumed else secrets.token_hex(8)
        link = Link(ws, timeout_s=cfg.send_timeout_s, label=f"session {session_id}")
        session: BaseSession
        listening = None
        if account.role == "user":
            settings = await self.ctx.off_loop(self.ctx.settings.get, account.name)
            state = resumed.state if resumed and isinstance(resumed.state, UserState) else None
            listening = state.listening if state else None
            session = UserSession(
                ctx=self.ctx,
                account=account,
                session_id=session_id,
                link=link,
                settings=settings,
                state=state,
            )
            manages: list[str] = []
        else:
            session = CaregiverSession(
                ctx=self.ctx, account=account, session_id=session_id, link=link
            )
            manages = await self.ctx.off_loop(self.ctx.accounts.assigned_users, account.name)
        session.peer = peer
        session.resume_token = secrets.token_urlsafe(24)
        ready = Ready(
            protocol=PROTOCOL_VERSION,
            session=session_id,
            resume=session.resume_token,
            user=account.name,
            role=account.role,
            resumed=resumed is not None,
            manages=manages,
            listening=listening,
            limits=Limits(
                max_frame_bytes=cfg.max_frame_bytes,
                max_message_bytes=cfg.max_message_bytes,
                max_text_bytes=cfg.max_text_bytes,
                audio_rate=cfg.audio_rate,
                max_audio_ms=cfg.max_audio_ms,
                frame_age_budget_ms=cfg.frame_age_budget_ms,
            ),
            capabilities=self.ctx.services.capabilities(),
            id=hello.id,
        )
        live()
        self.sessions[session_id] = session
        self.ctx.metrics.sessions_active += 1
        self.ctx.metrics.sessions_total += 1
        log.info(
            "session %s opened (%s) from %s%s",
            session_id,
            account.role,
            peer,
            " (resumed)" if resumed else "",
        )
        try:
            await session.send(ready)
        except BaseException:
            # The client left before ``ready`` reached it: its handler never gets the
            # session to close, so it is closed here. An attacker pass (and a phone on
            # bad Wi-Fi) left a slot counted for ever per hello-then-hang-up, and three
            # locked the account out until a restart.
            self.closed(session)
            raise
        if isinstance(session, UserSession):
            session.opened()
        return session

    async def _take_over(self, resume: str, user: str) -> None:
        """The phone reconnects while its old connection still looks alive (a dropped
        network is noticed only at the next keepalive, up to 40 s later): the old one
        is dropped now and leaves its state for this resume, so nothing said is repeated
        and hands-free goes on."""
        old = next(
            (
                s
                for s in self.sessions.values()
                if s.resume_token == resume and s.account.name == user
            ),
            None,
        )
        if old is None:
            return
        log.info("session %s replaced by its phone's reconnection", old.id)
        gone = self._gone.setdefault(old.id, asyncio.Event())
        old.link.abort("the phone reconnected")
        try:
            await asyncio.wait_for(gone.wait(), TAKE_OVER_S)
        except TimeoutError:
            self.closed(old)  # its handler is stuck somewhere; its state is handed over now

    def closed(self, session: BaseSession) -> None:
        gone = self._gone.pop(session.id, None)
        if gone is not None:
            gone.set()
        if self.sessions.pop(session.id, None) is None:
            return
        self.ctx.metrics.sessions_active -= 1
        if isinstance(session, UserSession):
            self.resumable.put(
                session.resume_token, session.id, session.account.name, session.state
            )
            log.info("session %s closed: %s", session.id, session.stats_line())
        else:
            log.info("session %s closed", session.id)
