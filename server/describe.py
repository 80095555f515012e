"""One-shot describe over HTTP: ``POST /v1/describe``, a JPEG in, an observation out.

For other apps and scripts that have a picture rather than a stream. The same
prompts, parser and model worker as a session, the same frame checks (size,
JPEG header, pixel cap) and the same failed-login limit; one request at a time
per account and at most ``RATE_PER_MINUTE`` a minute. websockets' HTTP side
takes no request bodies, so this listens on its own port (``describe_port``,
off by default) through aiohttp.

    curl -s -H "Authorization: Bearer $TOKEN" -H "Content-Type: image/jpeg" \\
         --data-binary @photo.jpg "http://laptop:8766/v1/describe?question=is+the+door+open"

Multipart (``image`` part, optional ``question`` and ``language`` parts) is
accepted too; parts with a ``Content-Transfer-Encoding`` are refused. With
``--tls-cert`` the port speaks https, as the websocket speaks wss.

Every answer has the same keys (``protocol/README.md``). A frame the change
detector finds too dark is never sent to the model (as in a session): the
answer says ``"view": "nothing-to-see"`` and, to a question, what a session
would say. A question the model leaves unanswered gets the session's "I'm not
sure" in the request's language, never silence.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import deque
from dataclasses import asdict
from typing import Any

from protocol import CameraFrame, ErrorCode
from server.analysis import AnalysisRequest
from server.auth import Account
from server.context import ServerContext
from server.jpeg import JpegHeaderError, frame_problem, jpeg_size, plain_headers
from server.languages import LANGUAGES
from server.ratelimit import client_address
from server.slot import PendingFrame

log = logging.getLogger("seealoud.describe")

RATE_PER_MINUTE = 30
MAX_QUESTION_CHARS = 500


class DescribeError(Exception):
    """A request refused with an HTTP status and a stable protocol error code."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Describer:
    """The endpoint's logic, independent of the HTTP library (tested directly too)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._recent: dict[str, deque[float]] = {}
        self._busy: set[str] = set()

    async def authenticate(self, header: str | None, peer: str) -> Account:
        now = time.monotonic()
        if self.ctx.login_limiter.retry_after(peer, now) > 0:
            raise DescribeError(429, ErrorCode.RATE_LIMITED, "too many failed logins; wait")
        token = header[7:].strip() if header and header.lower().startswith("bearer ") else ""
        account = await self.ctx.off_loop(self.ctx.accounts.authenticate, token)
        if account is None:
            self.ctx.metrics.auth_failures += 1
            if self.ctx.login_limiter.failed(peer, now):
                log.warning("describe: authentication failed from %s", peer)
            raise DescribeError(401, ErrorCode.AUTH_FAILED, "the token is not valid")
        self.ctx.login_limiter.succeeded(peer)
        if account.role != "user":
            raise DescribeError(403, ErrorCode.FORBIDDEN, "only a user account may ask")
        return account

    async def describe(
        self, account: Account, jpeg: bytes, question: str | None, language: str | None
    ) -> dict[str, Any]:
        """The observation as JSON; raises ``DescribeError``. One at a time per account:
        the slot is taken in ``_admit``, before the first ``await``, and given back here
        whatever happens, so concurrent requests cannot slip in between."""
        name = account.name
        self._admit(name)
        try:
            return await self._describe(name, jpeg, question, language)
        finally:
            self._busy.discard(name)

    async def _describe(
        self, name: str, jpeg: bytes, question: str | None, language: str | None
    ) -> dict[str, Any]:
        started = time.monotonic()
        frame = self._frame(jpeg)
        jpeg = frame.payload  # its metadata dropped (``plain_headers``)
        if language is None:
            language = (await self.ctx.off_loop(self.ctx.settings.get, name)).language
        if language not in LANGUAGES:
            raise DescribeError(
                400, ErrorCode.BAD_MESSAGE, f"language must be one of {sorted(LANGUAGES)}"
            )
        phrases = LANGUAGES[language].phrases
        if question is not None:
            question = question.strip()[:MAX_QUESTION_CHARS] or None
        view, view_reason = await self._view(jpeg)
        if view_reason == "dark":  # as in a session: a black frame never reaches the model
            return _answer(
                answer=phrases["sees_nothing_dark"] if question else None,
                view=(view, view_reason),
                total_ms=round((time.monotonic() - started) * 1000),
            )
        services = self.ctx.services
        analyzer = services.analyzer
        if analyzer is None or not services.vision_ready():
            raise DescribeError(503, ErrorCode.CAPABILITY_UNAVAILABLE, "Vision is unavailable.")
        asked = time.monotonic()
        try:
            obs = await analyzer.analyze(
                AnalysisRequest(
                    frame=PendingFrame(frame=frame),
                    question=question,
                    reason="question" if question else "describe",
                    session=f"describe:{name}",
                    language=language,
                )
            )
        except Exception as exc:  # model code may raise anything; the server goes on
            log.warning("describe: vision failed: %s", type(exc).__name__)
            raise DescribeError(502, ErrorCode.MODEL_FAILED, "the vision model failed") from exc
        model_ms = round((time.monotonic() - asked) * 1000)
        unsure = phrases["unsure"] if question else None
        if obs is None:
            # The analyzer says nothing about an empty look without a question (a session
            # stays quiet); its own timing and partial flag go with it, so the call's
            # duration is given and partial is false (see protocol/README.md).
            return _answer(
                answer=unsure,
                view=(view, view_reason),
                model_ms=model_ms,
                total_ms=round((time.monotonic() - started) * 1000),
            )
        signs = await self._signs(obs.signs, jpeg)
        return _answer(
            hazards=[asdict(h) for h in obs.hazards],
            signs=signs,
            scene=obs.scene,
            answer=(obs.answer or unsure) if question else None,
            partial=obs.partial,
            view=(view, view_reason),
            model_ms=obs.latency_ms if obs.latency_ms is not None else model_ms,
            total_ms=round((time.monotonic() - started) * 1000),
        )

    async def _view(self, jpeg: bytes) -> tuple[str, str | None]:
        """The change detector's view check (``dark``, ``featureless`` or fine), decoded
        at 1/8 scale on the detector pool, off the loop."""
        from vision.change import ChangeDetector, ChangeDetectorError, signature_from_jpeg

        detector = ChangeDetector()
        o = detector.options

        def check() -> tuple[str, str | None]:
            sig = signature_from_jpeg(
                jpeg, width=o.signature_width, contrast_floor=o.contrast_floor
            )
            return detector.view_of(sig)

        try:
            return await self.ctx.detector_pool.submit(check)
        except ChangeDetectorError as exc:
            raise DescribeError(400, ErrorCode.BAD_MESSAGE, f"the body: {exc}") from None

    def _admit(self, name: str) -> None:
        """Take the account's one slot (``describe`` gives it back) and count the request
        against the minute's limit; nothing here awaits."""
        if name in self._busy:
            raise DescribeError(429, ErrorCode.BUSY, "one request at a time per account")
        now = time.monotonic()
        recent = self._recent.setdefault(name, deque())
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= RATE_PER_MINUTE:
            raise DescribeError(429, ErrorCode.RATE_LIMITED, f"at most {RATE_PER_MINUTE} a minute")
        recent.append(now)
        self._busy.add(name)

    def _frame(self, jpeg: bytes) -> CameraFrame:
        """The body as a camera frame, refused by the same checks as a session's frames
        (bytes, the JPEG's own size, scans, pixel cap) before anything decodes it."""
        try:
            width, height = jpeg_size(jpeg)
        except JpegHeaderError:
            width = height = 1  # frame_problem reads the header again and says what is wrong
        frame = CameraFrame(
            seq=0, ts=int(time.time() * 1000), width=width, height=height, payload=jpeg
        )
        cfg = self.ctx.config
        problem = frame_problem(
            frame, max_bytes=cfg.max_frame_bytes, max_pixels=cfg.max_frame_pixels
        )
        if problem is not None:
            code, text = problem
            raise DescribeError(413 if code == ErrorCode.FRAME_TOO_LARGE else 400, code, text)
        frame.payload = plain_headers(jpeg)
        return frame

    async def _signs(self, signs: list[str], jpeg: bytes) -> list[dict[str, str | None]]:
        """Each reported sign with the reader's words (``None``: could not confirm it)."""
        if not signs:
            return []
        reader = self.ctx.services.text_if_ready()
        reading = None
        if reader is not None:
            try:
                reading = await self.ctx.services.ocr.submit(lambda: reader.read_jpeg(jpeg))
            except Exception:  # OCR's native code may raise anything: report unread
                reading = None
        from vision.reading import match_sign

        return [
            {"reported": s, "read": match_sign(s, reading) if reading is not None else None}
            for s in signs
        ]


def _answer(
    *,
    hazards: list[dict[str, Any]] | None = None,
    signs: list[dict[str, str | None]] | None = None,
    scene: str = "",
    answer: str | None = None,
    partial: bool = False,
    view: tuple[str, str | None] = ("ok", None),
    model_ms: int | None = None,
    total_ms: int,
) -> dict[str, Any]:
    """The one JSON shape of a 200 answer: every key always there."""
    return {
        "hazards": hazards or [],
        "signs": signs or [],
        "scene": scene,
        "answer": answer,
        "partial": partial,
        "view": view[0],
        "view_reason": view[1],
        "timings": {"model_ms": model_ms, "total_ms": total_ms},
    }


async def start_describe(
    ctx: ServerContext, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
) -> Any:
    """Serve ``POST /v1/describe`` on ``host:port`` (https with ``ssl_context``, which
    the server passes when it has ``--tls-cert``); returns the runner (``cleanup()``)."""
    from aiohttp import web

    describer = Describer(ctx)
    cap = ctx.config.max_frame_bytes + 65_536

    def refuse(exc: DescribeError) -> web.Response:
        return web.json_response(
            {"error": {"code": str(exc.code), "message": exc.message}}, status=exc.status
        )

    too_large = DescribeError(413, ErrorCode.FRAME_TOO_LARGE, "the request is too large")

    async def handle(request: web.Request) -> web.Response:
        peer = client_address(
            request.remote or "?",
            request.headers.get("X-Forwarded-For"),
            describer.ctx.config.trusted_proxies,
        )
        try:
            account = await describer.authenticate(request.headers.get("Authorization"), peer)
            if request.content_length is not None and request.content_length > cap:
                raise too_large  # said before the body is read
            jpeg, question, language = await _body(request, cap)
            question = question or request.query.get("question")
            language = language or request.query.get("language")
            result = await describer.describe(account, jpeg, question, language)
        except DescribeError as exc:
            return refuse(exc)
        except web.HTTPRequestEntityTooLarge:  # a chunked body past client_max_size
            return refuse(too_large)
        return web.json_response(result)

    async def plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = "SeeAloud"  # not the framework and its version

    app = web.Application(client_max_size=cap)
    app.router.add_post("/v1/describe", handle)
    app.on_response_prepare.append(plain_server_header)
    _quiet_bad_requests()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    return runner


class _BadRequestFilter(logging.Filter):
    """aiohttp logs a malformed request (a 30 KB URL, a broken request line) with its
    traceback and the first bytes of the request, which a client chose and which may hold
    a token: one line without them instead. The client got its 400 already."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            log.warning("describe: a malformed HTTP request was refused (%s)", type(exc).__name__)
            return False
        return True


def _quiet_bad_requests() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequestFilter) for f in logger.filters):
        logger.addFilter(_BadRequestFilter())


async def _parts(request: Any, cap: int) -> dict[str, bytes]:
    """The named parts of a multipart body, bounded by ``cap`` bytes in all."""
    from aiohttp import BodyPartReader

    reader = await request.multipart()
    fields: dict[str, bytes] = {}
    total = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise DescribeError(400, ErrorCode.BAD_MESSAGE, "nested multipart is not accepted")
        if part.headers.get("Content-Transfer-Encoding"):
            raise DescribeError(400, ErrorCode.BAD_MESSAGE, "encoded parts are not accepted")
        data = bytearray()
        while chunk := await part.read_chunk(65_536):
            total += len(chunk)
            if total > cap:
                raise DescribeError(413, ErrorCode.FRAME_TOO_LARGE, "the request is too large")
            data += chunk
        if part.name in ("image", "question", "language"):
            fields[part.name] = bytes(data)
    return fields


async def _body(request: Any, cap: int) -> tuple[bytes, str | None, str | None]:
    """The JPEG, and question/language if sent as multipart parts."""
    kind = request.content_type
    if kind == "image/jpeg":
        return await request.read(), None, None  # bounded by client_max_size
    if kind != "multipart/form-data":
        raise DescribeError(415, ErrorCode.UNSUPPORTED_FORMAT, "send image/jpeg or multipart")
    try:
        fields = await _parts(request, cap)
    except (ValueError, AssertionError) as exc:  # aiohttp's parser on a malformed body
        raise DescribeError(
            400, ErrorCode.BAD_MESSAGE, f"malformed multipart body: {str(exc)[:80]}"
        ) from None
    if "image" not in fields:
        raise DescribeError(400, ErrorCode.BAD_MESSAGE, "no 'image' part")
    text = {
        k: fields[k].decode("utf-8", "replace") for k in ("question", "language") if k in fields
    }
    return fields["image"], text.get("question"), text.get("language")
