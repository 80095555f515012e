"""The server's lifecycle and wiring: thin glue over ``websockets.asyncio.server.serve``.

``pages.py`` answers HTTP, ``handshake.py`` turns ``hello`` into an account,
``user_session.py`` / ``caregiver_session.py`` run a connection, ``hub.py``
delivers live changes, ``context.py`` is all a session may use. A handler
that crashes is logged with its traceback and closed with 1011; it never
takes others down. Shutdown says ``bye`` to everyone at once and exits within
seconds whatever the clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from protocol import Bye, ErrorCode
from protocol import Error as ErrorMsg
from runtime import Loader, Worker, WorkerPool
from server.analysis import Analyzer, VisionAnalyzer
from server.auth import UserStore
from server.config import ServerConfig
from server.context import ServerContext, Services
from server.handshake import HandshakeGate, handshake, refuse
from server.hub import Hub
from server.jpeg import MAX_SCANS
from server.link import LinkClosed
from server.metrics import ServerMetrics
from server.pages import Pages
from server.ratelimit import AccountBudgets, LoginLimiter, client_address
from server.registry import Registry
from server.session import BaseSession, SessionClosed
from server.settings import SettingsStore, UserSettings
from server.user_session import UserSession
from speech.asr import SpeechRecognizer
from speech.tts import SpeechSynthesizer
from vision.engine import VisionEngine
from vision.text import TextReader

log = logging.getLogger("seealoud.server")

# websockets logs whole frames at DEBUG (hello with its token, JPEG and PCM bytes);
# its own logger is pinned at WARNING so that never happens, whatever the log level
# (and each health probe is not an INFO line).
_WS_LOG = logging.getLogger("seealoud.websockets")
_WS_LOG.setLevel(logging.WARNING)
WS_PATH = "/ws"
SHUTDOWN_S = 3.0
MAX_HANDSHAKING_PER_ADDRESS = 16


class SeeAloudServer:
    """Owns the listening socket, the live sessions and the shared services."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        store: UserStore,
        settings_store: SettingsStore | None = None,
        analyzer: Analyzer | None = None,
        engine: VisionEngine | None = None,
        tts: SpeechSynthesizer | None = None,
        asr: SpeechRecognizer | None = None,
        text: TextReader | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.tts = Loader("speech output", lambda: _load_voice(tts)) if tts else None
        self.asr = Loader("speech input", asr.load) if asr else None
        self.vision = Loader("vision", engine.load_blocking) if engine else None
        self.text = Loader("text reading", text.load) if text else None
        services = Services(
            analyzer=VisionAnalyzer(engine) if engine else analyzer,
            vision=self.vision,
            tts=self.tts,
            tts_model=tts,
            asr=self.asr,
            asr_model=asr,
            text=self.text,
            text_model=text,
        )
        self.hub = Hub()
        self.metrics = ServerMetrics()
        self.ctx = ServerContext(
            config=config,
            metrics=self.metrics,
            accounts=store,
            settings=settings_store or SettingsStore(store.connection, voice_ok=_voice_check()),
            hub=self.hub,
            services=services,
            db=Worker("database", max_pending=1024),
            detector_pool=WorkerPool(
                "detector", size=os.cpu_count() or 2, max_pending=256, stall_s=10.0
            ),
            login_limiter=LoginLimiter(),
            frame_budgets=AccountBudgets.for_frames(
                config.account_frame_rate,
                config.max_frame_pixels,
                config.max_frame_bytes,
                MAX_SCANS,
            ),
        )
        for loader in (self.vision, self.tts, self.asr, self.text):
            if loader is not None:
                loader.on_change(lambda _: self.hub.capabilities(services.capabilities()))
        self.pages = Pages(
            self.ctx,
            tls=config.tls_cert is not None,
            engine_progress=(lambda: engine.progress.to_dict()) if engine is not None else None,
        )
        self.registry = Registry(self.ctx)
        self.sessions = self.registry.sessions
        self._background: list[asyncio.Task[None]] = []
        self._server: Server | None = None
        self._describe: Any = None
        self.describe_port: int | None = None
        self._ssl: ssl.SSLContext | None = None
        self._gate = HandshakeGate(MAX_HANDSHAKING_PER_ADDRESS)

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start accepting connections; models load in the background."""
        self._ssl = self._ssl_context()
        self._server = await serve(
            self._handler,
            self.config.host,
            self.config.port,
            process_request=self.pages.process_request,
            compression=None,  # media does not compress; deflate costs memory per socket
            max_size=self.config.max_message_bytes,
            max_queue=4,
            # A client that stops reading (its pongs never come) is closed within
            # 20 + 15 + 3 s: keepalive interval, pong timeout, closing handshake.
            ping_interval=20,
            ping_timeout=15,
            close_timeout=3,
            server_header="SeeAloud",
            logger=_WS_LOG,
            ssl=self._ssl,
        )
        log.info("listening on %s://%s:%d%s", self.scheme, self.config.host, self.port, WS_PATH)
        if self.config.describe_port is not None:
            from server.describe import start_describe

            self._describe = await start_describe(
                self.ctx, self.config.host, self.config.describe_port, ssl_context=self._ssl
            )
            self.describe_port = int(self._describe.addresses[0][1])
            log.info(
                "one-shot describe: POST %s://%s:%d/v1/describe",
                "https" if self._ssl else "http",
                self.config.host,
                self.describe_port,
            )
        for loader in (self.vision, self.tts, self.asr, self.text):
            if loader is not None:
                self._background.append(asyncio.create_task(loader.load(), name=loader.name))
        self._background.append(
            asyncio.create_task(
                self.hub.watch(self.ctx.settings, self.ctx.off_loop), name="settings-watch"
            )
        )
        self._background.append(
            asyncio.create_task(self.registry.watch_accounts(), name="accounts")
        )

    @property
    def scheme(self) -> str:
        return "wss" if self.config.tls_cert else "ws"

    @property
    def port(self) -> int:
        """The bound port (useful when the config asked for port 0)."""
        assert self._server is not None, "server not started"
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    @property
    def settings_store(self) -> SettingsStore:
        return self.ctx.settings

    async def close(self) -> None:
        """Say ``bye`` to every session at once, close them, stop listening; bounded
        in time whatever the clients do."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self.ctx.closing.set()
        server.close(close_connections=False)

        async def goodbye(session: BaseSession) -> None:
            with contextlib.suppress(LinkClosed, ConnectionClosed, TimeoutError):
                await asyncio.wait_for(session.send(Bye(reason="server-shutdown")), 1.0)
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(session.link.ws.close(CloseCode.GOING_AWAY), 1.0)
            if session.link.ws.state.name != "CLOSED":
                session.link.abort("server shutting down")

        # return_exceptions: one client's failure must not stop everyone else's goodbye.
        await asyncio.gather(
            *(goodbye(s) for s in list(self.sessions.values())), return_exceptions=True
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), SHUTDOWN_S)
        if self._describe is not None:
            await self._describe.cleanup()
        for task in self._background:
            task.cancel()  # loader threads are daemons; nobody waits for them
        if self.engine is not None:
            await self.engine.backend.close()
        self.pages.close()
        self.ctx.services.ocr.close()
        self.ctx.detector_pool.close()
        self.ctx.db.close()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None or self.config.tls_key is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    # --- operator side -------------------------------------------------------------

    def user_session(self, name: str) -> UserSession:
        """The live phone session of ``name`` (tests, benchmarks, the operator)."""
        return self.registry.user_session(name)

    async def settings_store_update(
        self, user: str, values: dict[str, object], *, changed_by: str = "operator"
    ) -> UserSettings:
        """Change a user's settings from the server side (CLI, tests) and apply them live."""
        new = await self.ctx.off_loop(
            lambda: self.ctx.settings.update(user, values, changed_by=changed_by)
        )
        self.hub.publish(user, new)
        return new

    # --- websocket -----------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        session: BaseSession | None = None
        peer = _peer(ws, self.config.trusted_proxies)
        if not self._gate.enter(peer):
            # Sockets that never say hello cost a file each: a few per address at a time.
            self.metrics.rate_limited += 1
            await refuse(ws, ErrorCode.RATE_LIMITED, "too many connections waiting to log in")
            return
        try:
            try:
                result = await handshake(ws, self.ctx, peer)
            finally:
                self._gate.leave(peer)
            if result is None:
                return
            account, hello = result
            session = await self.registry.open(ws, account, hello, peer)
            if session is None:
                return
            await session.run(ws)
        except SessionClosed:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(ws.close(CloseCode.NORMAL_CLOSURE, "bye"), 2)
        except (ConnectionClosed, LinkClosed):
            pass
        except Exception:
            self.metrics.handler_crashes += 1
            log.exception("session %s crashed", session.id if session else "(before ready)")
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                error = ErrorMsg(
                    code=ErrorCode.INTERNAL, message="internal server error", fatal=True
                )
                await asyncio.wait_for(ws.send(_encode(error)), 2)
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(ws.close(CloseCode.INTERNAL_ERROR, "internal error"), 2)
        finally:
            if session is not None:
                self.registry.closed(session)


def _load_voice(tts: SpeechSynthesizer) -> None:
    """Start the synthesiser and read espeak-ng's voice list once, on the loader's
    thread (the list is a subprocess; nobody may wait for it on the event loop)."""
    tts.load()
    from speech.voices import list_voices

    list_voices()


def _voice_check() -> Callable[[str, str], bool] | None:
    """Only voices espeak-ng itself lists (``speech.voices``), when speech is installed."""
    try:
        from speech.voices import is_valid_voice
    except ImportError:
        return None
    return is_valid_voice


def _encode(message: ErrorMsg) -> str | bytes:
    from protocol import encode

    return encode(message)


def _peer(ws: ServerConnection, trusted_proxies: list[str]) -> str:
    addr = ws.remote_address
    peer = str(addr[0]) if isinstance(addr, tuple) and addr else "?"
    forwarded = ws.request.headers.get("X-Forwarded-For") if ws.request else None
    return client_address(peer, forwarded, trusted_proxies)
