"""The websocket server: thin glue over ``websockets.asyncio.server.serve``.

HTTP routes (``/healthz``, ``/readyz``, ``/metrics``) and the Origin check are
answered in ``process_request``, before any websocket exists. The websocket
lives at ``/ws``: the first message must be ``hello`` with a valid token, then
``ready`` is sent and a ``Session`` takes over. A handler that crashes is
logged with its traceback and closed with 1011; it never takes others down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import json
import logging
import os
import secrets
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from protocol import (
    PROTOCOL_VERSION,
    Bye,
    Capabilities,
    ErrorCode,
    Hello,
    Limits,
    Message,
    ProtocolError,
    Ready,
    decode,
    encode,
)
from protocol import Error as ErrorMsg
from server.analysis import Analyzer, VisionAnalyzer
from server.auth import Account, UserStore
from server.config import ServerConfig
from server.metrics import ServerMetrics
from server.services import Service
from server.session import Session, SessionClosed
from server.settings import SettingsStore, UserSettings
from speech.asr import SpeechRecognizer
from speech.tts import SpeechSynthesizer
from vision.engine import VisionEngine

log = logging.getLogger("seealoud.server")

RESUME_TTL_S = 300.0

# websockets logs whole frames at DEBUG (hello with its token, JPEG and PCM bytes);
# its own logger is pinned at WARNING so that never happens, whatever the log level
# (and each health probe is not an INFO line).
_WS_LOG = logging.getLogger("seealoud.websockets")
_WS_LOG.setLevel(logging.WARNING)
WS_PATH = "/ws"


@dataclass(kw_only=True)
class _Resumable:
    session_id: str
    user: str
    expires_at: float


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
    ) -> None:
        self.config = config
        self.store = store
        self.settings_store = settings_store or SettingsStore(store.connection)
        self.engine = engine
        self.tts = Service("speech output", tts, tts.load) if tts else None
        self.asr = Service("speech input", asr, asr.load) if asr else None
        self.detector_pool = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="detector"
        )
        self._background: list[asyncio.Task[None]] = []
        self.pages = load_pages()
        if config.tls_cert is not None:
            # The phone downloads this once to trust the laptop (public half only).
            self.pages["/seealoud-ca.pem"] = (
                config.tls_cert.read_bytes(),
                "application/x-x509-ca-cert",
            )
        self.analyzer: Analyzer | None = VisionAnalyzer(engine) if engine else analyzer
        self.metrics = ServerMetrics()
        self.sessions: dict[str, Session] = {}
        self._resumable: dict[str, _Resumable] = {}
        self._server: Server | None = None

    # --- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await serve(
            self._handler,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            compression=None,  # media does not compress; deflate costs memory per socket
            max_size=self.config.max_message_bytes,
            max_queue=4,
            ping_interval=20,
            ping_timeout=20,
            server_header="SeeAloud",
            logger=_WS_LOG,
            ssl=self._ssl_context(),
        )
        log.info("listening on %s://%s:%d%s", self.scheme, self.config.host, self.port, WS_PATH)
        # Models load in the background: /healthz answers at once, /readyz says when.
        if self.engine is not None:
            self._background.append(asyncio.create_task(self.engine.load(), name="load-vision"))
        for service in (self.tts, self.asr):
            if service is not None:
                self._background.append(asyncio.create_task(service.load()))
        self._background.append(asyncio.create_task(self._watch_settings(), name="settings"))

    @property
    def scheme(self) -> str:
        return "wss" if self.config.tls_cert else "ws"

    @property
    def port(self) -> int:
        """The bound port (useful when the config asked for port 0)."""
        assert self._server is not None, "server not started"
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        """Say ``bye`` to every session, close them with 1001 and stop listening."""
        if self._server is None:
            return
        for session in list(self.sessions.values()):
            with contextlib.suppress(ConnectionClosed):
                await session.send(Bye(reason="server-shutdown"))
        self._server.close()  # closes open connections with 1001 (going away)
        await self._server.wait_closed()
        self._server = None
        for task in self._background:
            task.cancel()  # loader threads are daemons; nobody waits for them
        if self.engine is not None:
            await self.engine.backend.close()
        self.detector_pool.shutdown(wait=False, cancel_futures=True)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None or self.config.tls_key is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    # --- HTTP ------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        """What this server can do right now."""
        caps = Capabilities(vision=self.analyzer is not None)
        if self.analyzer is None:
            caps.reasons["vision"] = "no vision backend is configured"
        elif self.engine is not None and not self.engine.ready:
            caps.vision = False
            if self.engine.failure:
                caps.reasons["vision"] = f"the vision model failed to load: {self.engine.failure}"
            else:
                caps.reasons["vision"] = f"the vision model is {self.engine.status}"
        for attr, service in (("speech_in", self.asr), ("speech_out", self.tts)):
            if service is None:
                caps.reasons[attr] = f"{attr.replace('_', ' ')} is turned off on this server"
            elif service.status == "ready":
                setattr(caps, attr, True)
            else:
                caps.reasons[attr] = service.reason()
        caps.reasons["text_reading"] = "text reading is not available in this version"
        return caps

    def tts_if_ready(self) -> SpeechSynthesizer | None:
        return self.tts.ready_model() if self.tts else None

    def asr_if_ready(self) -> SpeechRecognizer | None:
        return self.asr.ready_model() if self.asr else None

    async def _watch_settings(self, every_s: float = 1.0) -> None:
        """Apply settings changed by another process (``seealoud settings set``) within a
        second: the audit log's newest id is polled, a few microseconds of SQLite."""
        seen = self.settings_store.last_change_id()
        while True:
            await asyncio.sleep(every_s)  # polling interval
            latest = self.settings_store.last_change_id()
            if latest == seen:
                continue
            for user in self.settings_store.users_changed_since(seen):
                await self.settings_changed(user, self.settings_store.get(user))
            seen = latest

    async def settings_store_update(
        self, user: str, values: dict[str, object], *, changed_by: str = "operator"
    ) -> UserSettings:
        """Change a user's settings from the server side (CLI, tests) and apply them live."""
        new = self.settings_store.update(user, values, changed_by=changed_by)
        await self.settings_changed(user, new)
        return new

    async def settings_changed(self, user: str, settings: UserSettings) -> None:
        """Apply a user's new settings to their running sessions at once."""
        for session in list(self.sessions.values()):
            if session.account.name == user and session.is_user:
                with contextlib.suppress(ConnectionClosed):
                    await session.apply_settings(settings)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            return _json_response(
                http.HTTPStatus.OK, {"capabilities": dataclasses.asdict(self.capabilities())}
            )
        if path == "/metrics":
            return _json_response(http.HTTPStatus.OK, self.metrics.snapshot())
        if path != WS_PATH:
            page = self.pages.get(path)
            if page is None:
                return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
            return _static_response(*page)
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request.headers.get("Host")):
            log.warning("refused websocket from origin %s", origin[:100])
            return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
        return None

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        if origin in self.config.origins:
            return True
        # The page this server serves itself is always allowed (same origin).
        scheme = "https" if self.config.tls_cert else "http"
        return host is not None and origin == f"{scheme}://{host}"

    # --- websocket -------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        session: Session | None = None
        try:
            account, hello = await self._handshake(ws)
            if account is None or hello is None:
                return
            session = self._open_session(ws, account, hello)
            await self._run_session(ws, session)
        except ConnectionClosed:
            pass
        except Exception:
            self.metrics.handler_crashes += 1
            log.exception("session %s crashed", session.id if session else "(before ready)")
            with contextlib.suppress(ConnectionClosed):
                await ws.send(
                    encode(
                        ErrorMsg(
                            code=ErrorCode.INTERNAL, message="internal server error", fatal=True
                        )
                    )
                )
            await ws.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            if session is not None:
                self._end_session(session)

    async def _refuse(
        self,
        ws: ServerConnection,
        code: ErrorCode,
        text: str,
        close: CloseCode = CloseCode.POLICY_VIOLATION,
    ) -> tuple[None, None]:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode(ErrorMsg(code=code, message=text, fatal=True)))
        await ws.close(close, code.value)
        return None, None

    async def _handshake(self, ws: ServerConnection) -> tuple[Account | None, Hello | None]:
        try:
            raw = await asyncio.wait_for(ws.recv(), self.config.hello_timeout_s)
        except TimeoutError:
            return await self._refuse(ws, ErrorCode.NOT_AUTHENTICATED, "no hello received in time")
        try:
            hello = decode(raw, max_bytes=self.config.max_text_bytes)
        except ProtocolError as exc:
            return await self._refuse(ws, exc.code, exc.message)
        if not isinstance(hello, Hello):
            return await self._refuse(
                ws, ErrorCode.NOT_AUTHENTICATED, "the first message must be hello"
            )
        if hello.protocol != PROTOCOL_VERSION:
            return await self._refuse(
                ws,
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol {hello.protocol} is not supported; "
                f"this server speaks {PROTOCOL_VERSION}",
                CloseCode.PROTOCOL_ERROR,
            )
        account = self.store.authenticate(hello.token)
        if account is None:
            self.metrics.auth_failures += 1
            log.warning("authentication failed from %s", _peer(ws))
            return await self._refuse(ws, ErrorCode.AUTH_FAILED, "the token is not valid")
        return account, hello

    def _open_session(self, ws: ServerConnection, account: Account, hello: Hello) -> Session:
        now = time.monotonic()
        self._resumable = {k: v for k, v in self._resumable.items() if v.expires_at > now}
        resumed = None
        if hello.resume is not None:
            candidate = self._resumable.pop(hello.resume, None)
            if candidate is not None and candidate.user == account.name:
                resumed = candidate
        session_id = resumed.session_id if resumed else secrets.token_hex(8)

        async def send(message: Message) -> None:
            await ws.send(encode(message))

        session = Session(
            server=self,
            session_id=session_id,
            account=account,
            send=send,
            analyzer=self.analyzer if account.role == "user" else None,
        )
        session.resume_token = secrets.token_urlsafe(24)
        self.sessions[session_id] = session
        self.metrics.sessions_active += 1
        self.metrics.sessions_total += 1
        log.info(
            "session %s opened for %s (%s) from %s%s",
            session_id,
            account.name,
            account.role,
            _peer(ws),
            " (resumed)" if resumed else "",
        )
        session.ready = Ready(
            protocol=PROTOCOL_VERSION,
            session=session_id,
            resume=session.resume_token,
            user=account.name,
            role=account.role,
            resumed=resumed is not None,
            manages=self.store.assigned_users(account.name) if account.role == "caregiver" else [],
            limits=Limits(
                max_frame_bytes=self.config.max_frame_bytes,
                max_message_bytes=self.config.max_message_bytes,
                max_text_bytes=self.config.max_text_bytes,
                audio_rate=self.config.audio_rate,
                max_audio_ms=self.config.max_audio_ms,
                frame_age_budget_ms=self.config.frame_age_budget_ms,
            ),
            capabilities=self.capabilities(),
            id=hello.id,
        )
        return session

    async def _run_session(self, ws: ServerConnection, session: Session) -> None:
        assert session.ready is not None
        await session.send(session.ready)
        receiver = asyncio.create_task(self._receive(ws, session), name=f"recv-{session.id}")
        loops = [
            asyncio.create_task(run(), name=f"{run.__name__}-{session.id}")
            for run in session.tasks()
        ]
        tasks = {receiver, *loops}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise a crash so _handler logs it and closes 1011
        finally:
            session.speaker.cut()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive(self, ws: ServerConnection, session: Session) -> None:
        text_limit = self.config.max_text_bytes
        async for raw in ws:
            started = time.perf_counter()
            try:
                message = decode(raw, max_bytes=text_limit if isinstance(raw, str) else None)
            except ProtocolError as exc:
                self.metrics.bad_messages += 1
                await session.send_error(exc.code, exc.message)
                continue
            try:
                await session.handle(message, received_at=time.monotonic())
            except SessionClosed:
                await ws.close(CloseCode.NORMAL_CLOSURE, "bye")
                return
            self.metrics.ingest.add(time.perf_counter() - started)

    def _end_session(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self.metrics.sessions_active -= 1
        if session.resume_token:
            self._resumable[session.resume_token] = _Resumable(
                session_id=session.id,
                user=session.account.name,
                expires_at=time.monotonic() + RESUME_TTL_S,
            )
        st = session.narrator.stats
        log.info(
            "session %s closed: frames received=%d dropped=%d rejected=%d, detector fired %d, "
            "analyses %d; spoke %d, deduplicated %d, stale dropped %d",
            session.id,
            session.slot.received,
            session.slot.dropped,
            session.frames_rejected,
            session.detector_fires,
            session.analyses,
            st.spoken,
            st.deduplicated,
            st.stale_dropped,
        )


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    return str(addr[0]) if isinstance(addr, tuple) and addr else "?"


WEB_DIR = Path(__file__).resolve().parent.parent / "client-demo" / "web"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
_CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; "
    "img-src 'self' data: blob:; style-src 'self'; script-src 'self'; worker-src 'self'"
)


def load_pages() -> dict[str, tuple[bytes, str]]:
    """The phone and caregiver pages and their assets, read once at start-up."""
    try:
        from importlib.resources import files

        web = Path(str(files("seealoud_client") / "web"))
    except (ImportError, ModuleNotFoundError):
        web = WEB_DIR
    if not web.is_dir():
        web = WEB_DIR
    pages: dict[str, tuple[bytes, str]] = {}
    if not web.is_dir():
        log.warning("web pages not found at %s; / and /caregiver will answer 404", web)
        return pages
    for file in web.iterdir():
        if file.suffix in _TYPES:
            pages[f"/static/{file.name}"] = (file.read_bytes(), _TYPES[file.suffix])
    for route, name in (("/", "index.html"), ("/caregiver", "caregiver.html")):
        if f"/static/{name}" in pages:
            pages[route] = pages[f"/static/{name}"]
    return pages


def _static_response(body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("Content-Security-Policy", _CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Permissions-Policy", "camera=(self), microphone=(self)"),
        ]
    )
    return Response(200, "OK", headers, body)


def _json_response(status: http.HTTPStatus, body: dict[str, Any]) -> Response:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status.value, status.phrase, headers, data)
