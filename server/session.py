"""One authenticated connection: routes incoming messages, runs its analysis loop.

The receive loop only decodes, validates and moves bytes (frames go into the
``FrameSlot``); model work happens in the analysis task, which awaits the
analyzer's worker. Errors in one message are answered with an ``error`` and
the session goes on; only the caller (``server/app.py``) closes connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from protocol import (
    AudioChunk,
    AudioStart,
    AudioStop,
    Bye,
    CameraFrame,
    ErrorCode,
    Interrupt,
    Message,
    Ping,
    Pong,
    Question,
    Ready,
    SettingsGet,
    SettingsUpdate,
)
from protocol import Error as ErrorMsg
from server.analysis import AnalysisRequest, Analyzer
from server.auth import Account
from server.slot import FrameSlot, PendingFrame

if TYPE_CHECKING:
    from server.app import SeeAloudServer

log = logging.getLogger("seealoud.session")

SendFn = Callable[[Message], Awaitable[None]]

JPEG_MAGIC = b"\xff\xd8"
MAX_DIMENSION = 8192
MAX_AUDIO_CHUNK_BYTES = 64_000
MAX_PENDING_QUESTIONS = 4
MAX_QUESTION_CHARS = 500


class SessionClosed(Exception):
    """The client said ``bye``; the connection should close normally."""


class Session:
    """State and behaviour of one live connection after ``ready``."""

    def __init__(
        self,
        *,
        server: SeeAloudServer,
        session_id: str,
        account: Account,
        send: SendFn,
        analyzer: Analyzer | None,
    ) -> None:
        self.server = server
        self.id = session_id
        self.account = account
        self._send = send
        self.analyzer = analyzer
        self.slot = FrameSlot()
        self.questions: deque[tuple[str, str | None]] = deque()
        self._work = asyncio.Event()
        self._audio_open = False
        self._audio_bytes = 0
        self.frames_rejected = 0
        self.analyses = 0
        self.resume_token = ""
        self.ready: Ready | None = None

    # --- sending ---------------------------------------------------------

    async def send(self, message: Message) -> None:
        await self._send(message)

    async def send_error(
        self, code: ErrorCode, message: str, *, ref: str | None = None, fatal: bool = False
    ) -> None:
        await self.send(ErrorMsg(code=code, message=message, fatal=fatal, ref=ref))

    # --- receiving -------------------------------------------------------

    async def handle(self, message: Message, received_at: float) -> None:
        """Act on one decoded message from the client."""
        match message:
            case CameraFrame():
                await self._on_frame(message, received_at)
            case AudioChunk():
                await self._on_audio_chunk(message)
            case Ping():
                await self.send(Pong(t=message.t, id=message.id))
            case Question():
                await self._on_question(message)
            case Interrupt():
                # Nothing is spoken by this server yet; the echo tells the client
                # to flush its own playback queue at once.
                await self.send(Interrupt(reason="user", id=message.id))
            case AudioStart():
                await self._on_audio_start(message)
            case AudioStop():
                self._audio_open = False
            case SettingsGet() | SettingsUpdate():
                await self.send_error(
                    ErrorCode.CAPABILITY_UNAVAILABLE,
                    "settings are not served by this version of the server",
                    ref=message.id,
                )
            case Bye():
                raise SessionClosed(message.reason)
            case _:
                await self.send_error(
                    ErrorCode.UNEXPECTED_MESSAGE,
                    f"{message.wire_type()} is sent by the server, not the client",
                    ref=message.id,
                )

    def _media_allowed(self) -> bool:
        return self.account.role == "user"

    async def _on_frame(self, frame: CameraFrame, received_at: float) -> None:
        problem = self._frame_problem(frame)
        if problem is not None:
            code, text = problem
            self.frames_rejected += 1
            self.server.metrics.frames_rejected += 1
            await self.send_error(code, text, ref=frame.id)
            return
        before = self.slot.dropped
        self.slot.put(PendingFrame(frame=frame, received_at=received_at))
        self.server.metrics.frames_received += 1
        self.server.metrics.frames_dropped += self.slot.dropped - before
        self._work.set()

    def _frame_problem(self, frame: CameraFrame) -> tuple[ErrorCode, str] | None:
        limit = self.server.config.max_frame_bytes
        if not self._media_allowed():
            return ErrorCode.FORBIDDEN, "caregiver sessions cannot send camera frames"
        if len(frame.payload) > limit:
            return ErrorCode.FRAME_TOO_LARGE, (
                f"frame of {len(frame.payload)} bytes is over the {limit}-byte limit; "
                "send a smaller or more compressed JPEG"
            )
        if frame.format != "jpeg":
            return ErrorCode.UNSUPPORTED_FORMAT, f"frame format {frame.format[:20]!r}: use 'jpeg'"
        if not frame.payload.startswith(JPEG_MAGIC):
            return ErrorCode.BAD_MESSAGE, "frame payload is not a JPEG (no FFD8 marker)"
        if not (0 < frame.width <= MAX_DIMENSION and 0 < frame.height <= MAX_DIMENSION):
            return ErrorCode.BAD_MESSAGE, f"frame size {frame.width}x{frame.height} is invalid"
        if frame.seq < 0 or frame.ts < 0:
            return ErrorCode.BAD_MESSAGE, "frame seq and ts must be non-negative"
        return None

    async def _on_question(self, question: Question) -> None:
        text = question.text.strip()
        if not text or len(text) > MAX_QUESTION_CHARS:
            await self.send_error(
                ErrorCode.BAD_MESSAGE,
                f"question must be 1-{MAX_QUESTION_CHARS} characters",
                ref=question.id,
            )
            return
        if self.analyzer is None:
            await self.send_error(
                ErrorCode.CAPABILITY_UNAVAILABLE,
                "vision is unavailable on this server, so questions cannot be answered",
                ref=question.id,
            )
            return
        if self.slot.latest is None:
            await self.send_error(
                ErrorCode.NO_FRAME,
                "no camera frame has arrived yet; start the camera, then ask",
                ref=question.id,
            )
            return
        if len(self.questions) >= MAX_PENDING_QUESTIONS:
            self.questions.popleft()
        self.questions.append((text, question.id))
        self._work.set()

    async def _on_audio_start(self, start: AudioStart) -> None:
        if not self._media_allowed():
            await self.send_error(ErrorCode.FORBIDDEN, "caregiver sessions cannot send audio")
            return
        self._audio_open = True
        self._audio_bytes = 0
        await self.send_error(
            ErrorCode.CAPABILITY_UNAVAILABLE,
            "speech input is unavailable on this server; type the question instead",
            ref=start.id,
        )

    async def _on_audio_chunk(self, chunk: AudioChunk) -> None:
        if len(chunk.payload) > MAX_AUDIO_CHUNK_BYTES:
            await self.send_error(
                ErrorCode.TOO_LARGE,
                f"audio chunk over {MAX_AUDIO_CHUNK_BYTES} bytes; send 20-100 ms chunks",
            )
            return
        if not self._audio_open:
            await self.send_error(ErrorCode.UNEXPECTED_MESSAGE, "audio-chunk without audio-start")
            return
        self._audio_bytes += len(chunk.payload)

    # --- analysis --------------------------------------------------------

    async def run_analysis(self) -> None:
        """Forever: take the next question or newest frame, analyse, send the result."""
        if self.analyzer is None:
            return
        while True:
            await self._work.wait()
            self._work.clear()
            request = self._next_request()
            if request is None:
                continue
            self._work.set()  # look again after this one; more may be waiting
            await self._analyze(request)

    def _next_request(self) -> tuple[AnalysisRequest, str | None] | None:
        if self.questions and self.slot.latest is not None:
            text, ref = self.questions.popleft()
            request = AnalysisRequest(
                frame=self.slot.latest, question=text, reason="question", session=self.id
            )
            return request, ref
        frame = self.slot.take_nowait()
        if frame is None:
            return None
        return AnalysisRequest(frame=frame, session=self.id), None

    async def _analyze(self, item: tuple[AnalysisRequest, str | None]) -> None:
        assert self.analyzer is not None
        request, ref = item
        if not getattr(self.analyzer, "ready", True):
            if request.question is not None:
                await self.send_error(
                    ErrorCode.CAPABILITY_UNAVAILABLE,
                    self.server.capabilities().reasons.get("vision", "vision is unavailable"),
                    ref=ref,
                )
            return
        started = time.monotonic()
        try:
            observation = await self.analyzer.analyze(request)
        except Exception as exc:  # a dead model must not end the session
            log.warning(
                "session %s: analyzer %s failed: %s",
                self.id,
                self.analyzer.name,
                type(exc).__name__,
            )
            await self.send_error(
                ErrorCode.MODEL_FAILED, "the vision model failed on this frame", ref=ref
            )
            return
        self.analyses += 1
        self.server.metrics.analyses += 1
        if observation is None:
            return
        observation.id = ref
        if observation.latency_ms is None:
            observation.latency_ms = round((time.monotonic() - started) * 1000)
        await self.send(observation)
