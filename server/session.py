"""One authenticated connection: the conversation with one phone (or caregiver page).

The receive loop only decodes, validates and moves bytes. Everything slow runs
in the session's tasks, off the socket:

    camera-frame -> FrameSlot -> detector task (change detector, thread pool)
                 -> model slot (newest wins) -> analysis task (the vision engine's worker)
                 -> Narrator -> Speaker task (TTS thread) -> speech-* messages
    audio-*      -> Listener (VAD, Whisper worker) -> transcript -> question
    question     -> skips the detector: the newest frame goes to the model next

Errors in one message are answered with an ``error`` and the session goes on;
only the caller (``server/app.py``) closes connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from protocol import (
    AudioChunk,
    AudioStart,
    AudioStop,
    Bye,
    CameraFrame,
    ErrorCode,
    HazardInfo,
    Interrupt,
    Message,
    ObservationMsg,
    Ping,
    Pong,
    Question,
    Ready,
    Settings,
    SettingsChangeInfo,
    SettingsGet,
    SettingsUpdate,
    TranscriptMsg,
)
from protocol import Error as ErrorMsg
from server.analysis import AnalysisRequest, Analyzer
from server.auth import Account
from server.listener import Listener, ListenError
from server.narrator import Narrator
from server.settings import InvalidSettings, UserSettings
from server.slot import FrameSlot, PendingFrame
from server.speaker import Speaker
from speech.tts import VoiceOptions
from vision.change import ChangeDetector, ChangeDetectorError, ChangeOptions

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
        self.resume_token = ""
        self.ready: Ready | None = None
        self.settings = (
            server.settings_store.get(account.name) if self.is_user else (UserSettings())
        )
        self.slot = FrameSlot()  # socket -> detector
        self.model_slot = FrameSlot()  # detector -> model
        self.detector = ChangeDetector(self._detector_options())
        self.questions: deque[tuple[str, str | None]] = deque()
        self._detect_wake = asyncio.Event()
        self._work = asyncio.Event()
        self.narrator = Narrator(
            self.settings, frame_age_budget_s=server.config.frame_age_budget_ms / 1000
        )
        self.speaker = Speaker(
            narrator=self.narrator,
            send=self.send,
            tts=server.tts_if_ready,
            voice=self._voice,
            rate=server.config.audio_rate,
        )
        self.listener: Listener | None = None
        self._audio_error_sent = False
        self.frames_rejected = 0
        self.analyses = 0
        self.detector_fires = 0

    @property
    def is_user(self) -> bool:
        return self.account.role == "user"

    # --- tasks -------------------------------------------------------------

    def tasks(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """The session's background loops (run until the connection ends)."""
        if not self.is_user:
            return []
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [self.speaker.run]
        if self.analyzer is not None:
            loops += [self.run_detector, self.run_analysis]
        return loops

    # --- sending ---------------------------------------------------------

    async def send(self, message: Message) -> None:
        await self._send(message)

    async def send_error(
        self, code: ErrorCode | str, message: str, *, ref: str | None = None, fatal: bool = False
    ) -> None:
        await self.send(ErrorMsg(code=str(code), message=message, fatal=fatal, ref=ref))

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
                self._interrupt()
                await self.send(Interrupt(reason="user", id=message.id))
            case AudioStart():
                await self._on_audio_start(message)
            case AudioStop():
                await self._on_audio_stop(message)
            case SettingsGet():
                await self._on_settings_get(message)
            case SettingsUpdate():
                await self._on_settings_update(message)
            case Bye():
                raise SessionClosed(message.reason)
            case _:
                await self.send_error(
                    ErrorCode.UNEXPECTED_MESSAGE,
                    f"{message.wire_type()} is sent by the server, not the client",
                    ref=message.id,
                )

    def _interrupt(self) -> None:
        self.narrator.interrupt()
        self.speaker.cut()

    # --- frames ----------------------------------------------------------

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
        self._detect_wake.set()

    def _frame_problem(self, frame: CameraFrame) -> tuple[ErrorCode, str] | None:
        limit = self.server.config.max_frame_bytes
        if not self.is_user:
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

    async def run_detector(self) -> None:
        """Forever: run the change detector on the newest frame; pass firing frames on."""
        loop = asyncio.get_running_loop()
        while True:
            await self._detect_wake.wait()
            self._detect_wake.clear()
            pending = self.slot.take_nowait()
            if pending is None:
                continue
            if not self.server.config.change_detection:
                self._to_model(pending, "every-frame")
                continue
            try:
                decision = await loop.run_in_executor(
                    self.server.detector_pool,
                    self.detector.observe_jpeg,
                    pending.frame.payload,
                    pending.received_at,
                )
            except ChangeDetectorError as exc:
                self.frames_rejected += 1
                self.server.metrics.frames_rejected += 1
                await self.send_error(ErrorCode.BAD_MESSAGE, str(exc), ref=pending.frame.id)
                continue
            if decision.fire and decision.reason is not None:
                self.detector_fires += 1
                self.server.metrics.detector_fires += 1
                self._to_model(pending, decision.reason.value)
            if self.slot.pending():
                self._detect_wake.set()

    def _to_model(self, pending: PendingFrame, reason: str) -> None:
        pending.reason = reason
        before = self.model_slot.dropped
        self.model_slot.put(pending)
        self.server.metrics.model_frames_dropped += self.model_slot.dropped - before
        self._work.set()

    # --- questions and analysis ------------------------------------------

    async def _on_question(self, question: Question) -> None:
        text = question.text.strip()
        if not text or len(text) > MAX_QUESTION_CHARS:
            await self.send_error(
                ErrorCode.BAD_MESSAGE,
                f"question must be 1-{MAX_QUESTION_CHARS} characters",
                ref=question.id,
            )
            return
        if not self.is_user:
            await self.send_error(ErrorCode.FORBIDDEN, "caregiver sessions cannot ask questions")
            return
        if self.analyzer is None or not getattr(self.analyzer, "ready", True):
            reason = self.server.capabilities().reasons.get("vision", "vision is unavailable")
            await self.send_error(ErrorCode.CAPABILITY_UNAVAILABLE, reason, ref=question.id)
            self.speaker.offer(self.narrator.notice("no_vision"))
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

    async def run_analysis(self) -> None:
        """Forever: answer the next question, else look at the newest firing frame."""
        while True:
            await self._work.wait()
            self._work.clear()
            request = self._next_request()
            if request is None:
                continue
            self._work.set()  # look again after this one; more may be waiting
            await self._analyze(*request)

    def _next_request(self) -> tuple[AnalysisRequest, str | None] | None:
        memory = self.narrator.memory_for_prompt()
        if self.questions and self.slot.latest is not None:
            text, ref = self.questions.popleft()
            self.detector.question(time.monotonic())  # counts as a model call for the cooldown
            request = AnalysisRequest(
                frame=self.slot.latest,
                question=text,
                reason="question",
                session=self.id,
                language=self.settings.language,
                memory=memory,
            )
            return request, ref
        frame = self.model_slot.take_nowait()
        if frame is None:
            return None
        request = AnalysisRequest(
            frame=frame, reason=frame.reason, session=self.id, language=self.settings.language
        )
        return request, None

    async def _analyze(self, request: AnalysisRequest, ref: str | None) -> None:
        assert self.analyzer is not None
        if not getattr(self.analyzer, "ready", True):
            return  # questions were answered at once; frames wait for the model
        frame_time = request.frame.received_at
        request.on_hazard = lambda h: self._hazard_now(h, frame_time)
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
            if request.question is not None:
                self.speaker.offer(self.narrator.answer(None))
            return
        self.analyses += 1
        self.server.metrics.analyses += 1
        if observation is None:
            return
        observation.id = ref
        if observation.latency_ms is None:
            observation.latency_ms = round((time.monotonic() - started) * 1000)
        await self.send(observation)
        self.speak_observation(observation, frame_time, question=request.question is not None)

    def _hazard_now(self, hazard: HazardInfo, frame_time: float) -> None:
        """A hazard streamed out of the model before its answer finished."""
        self.speaker.offer(
            self.narrator.hazard(hazard, frame_time=frame_time, now=time.monotonic())
        )

    def speak_observation(self, obs: ObservationMsg, frame_time: float, *, question: bool) -> None:
        """Hand an observation to the narrator and wake the speaker."""
        queued = self.narrator.observe(
            obs, frame_time=frame_time, now=time.monotonic(), question=question
        )
        for u in queued:
            self.speaker.offer(u)
        self.speaker.wake()

    # --- audio in ----------------------------------------------------------

    async def _on_audio_start(self, start: AudioStart) -> None:
        if not self.is_user:
            await self.send_error(ErrorCode.FORBIDDEN, "caregiver sessions cannot send audio")
            return
        self._audio_error_sent = False
        asr = self.server.asr_if_ready()
        if asr is not None and self.listener is None:
            self.listener = Listener(
                asr, max_ms=self.server.config.max_audio_ms, endpoint_silence_ms=700
            )
        if self.listener is None:
            await self.send_error(
                ErrorCode.CAPABILITY_UNAVAILABLE,
                self.server.capabilities().reasons.get("speech_in", "speech input is unavailable")
                + "; type the question instead",
                ref=start.id,
            )
            self._audio_error_sent = True
            return
        self._interrupt()  # the user is talking: stop talking over them
        try:
            self.listener.start(start)
        except ListenError as exc:
            await self.send_error(exc.code, str(exc), ref=start.id)

    async def _on_audio_chunk(self, chunk: AudioChunk) -> None:
        if len(chunk.payload) > MAX_AUDIO_CHUNK_BYTES:
            await self.send_error(
                ErrorCode.TOO_LARGE,
                f"audio chunk over {MAX_AUDIO_CHUNK_BYTES} bytes; send 20-100 ms chunks",
            )
            return
        if self.listener is None:
            if not self._audio_error_sent:
                await self.send_error(
                    ErrorCode.UNEXPECTED_MESSAGE, "audio-chunk without audio-start"
                )
                self._audio_error_sent = True
            return
        try:
            self.listener.feed(chunk)
        except ListenError as exc:
            if not self._audio_error_sent:
                await self.send_error(exc.code, str(exc))
                self._audio_error_sent = True
            return
        if self.listener.overflowed:
            if self.listener.mode != "hands-free":
                await self.send_error(
                    ErrorCode.AUDIO_TOO_LONG,
                    f"utterance longer than {self.server.config.max_audio_ms} ms; "
                    "transcribing what arrived",
                )
            await self._transcribe(None, explicit=False)
        elif await self.listener.heard_end():
            await self._transcribe(None, explicit=False)

    async def _on_audio_stop(self, stop: AudioStop) -> None:
        if self.listener is None or self.listener.utterance is None:
            if not self._audio_error_sent:
                await self.send_error(
                    ErrorCode.UNEXPECTED_MESSAGE, "audio-stop without audio-start", ref=stop.id
                )
            return
        await self._transcribe(stop.id)

    async def _transcribe(self, ref: str | None, *, explicit: bool = True) -> None:
        assert self.listener is not None
        try:
            transcript = await self.listener.finish(
                language=self.settings.language, explicit=explicit
            )
        except ListenError:
            return
        except Exception as exc:
            log.warning("session %s: transcription failed: %s", self.id, type(exc).__name__)
            await self.send_error(ErrorCode.MODEL_FAILED, "speech recognition failed", ref=ref)
            return
        if transcript is None:
            if explicit:  # push-to-talk: the user waits for something
                await self.send(TranscriptMsg(text="", final=True, id=ref))
                self.speaker.offer(self.narrator.notice("not_heard"))
            return
        await self.send(
            TranscriptMsg(
                text=transcript.text,
                language=transcript.language,
                confidence=transcript.confidence,
                audio_ms=round(transcript.audio_ms),
                id=ref,
            )
        )
        await self._on_question(Question(text=transcript.text, id=ref))

    # --- settings ----------------------------------------------------------

    def _target_user(self, named: str | None) -> str | None:
        if named is None:
            return self.account.name if self.is_user else None
        return named

    async def _on_settings_get(self, msg: SettingsGet) -> None:
        user = self._target_user(msg.user)
        if user is None:
            await self.send_error(ErrorCode.BAD_MESSAGE, "name the user", ref=msg.id)
            return
        if not await self._may_manage(user, msg.id):
            return
        values = self.server.settings_store.get(user).to_dict()
        await self.send(Settings(user=user, values=values, changes=self._changes(user), id=msg.id))

    async def _on_settings_update(self, msg: SettingsUpdate) -> None:
        if self.is_user:
            await self.send_error(
                ErrorCode.FORBIDDEN, "only a caregiver can change settings", ref=msg.id
            )
            return
        user = self._target_user(msg.user)
        if user is None:
            await self.send_error(ErrorCode.BAD_MESSAGE, "name the user", ref=msg.id)
            return
        if not await self._may_manage(user, msg.id):
            return
        try:
            new = self.server.settings_store.update(user, msg.values, changed_by=self.account.name)
        except InvalidSettings as exc:
            await self.send_error(ErrorCode.INVALID_SETTINGS, str(exc), ref=msg.id)
            return
        log.info(
            "settings of %s changed by %s: %s",
            user,
            self.account.name,
            ", ".join(sorted(msg.values)),
        )
        await self.send(
            Settings(user=user, values=new.to_dict(), changes=self._changes(user), id=msg.id)
        )
        await self.server.settings_changed(user, new)

    def _changes(self, user: str) -> list[SettingsChangeInfo]:
        if self.is_user:
            return []
        return [
            SettingsChangeInfo(at=c.changed_at, by=c.changed_by, key=c.key, old=c.old, new=c.new)
            for c in self.server.settings_store.history(user, limit=20)
        ]

    async def _may_manage(self, user: str, ref: str | None) -> bool:
        try:
            self.server.store.get(user)
        except Exception:
            await self.send_error(ErrorCode.UNKNOWN_USER, f"no user named {user[:64]!r}", ref=ref)
            return False
        if not self.server.store.may_manage(self.account, user):
            await self.send_error(
                ErrorCode.FORBIDDEN, f"{self.account.name} may not manage {user[:64]!r}", ref=ref
            )
            return False
        return True

    async def apply_settings(self, settings: UserSettings) -> None:
        """A caregiver changed this user's settings: use them from now on."""
        self.settings = settings
        self.narrator.settings = settings
        self.detector.options = self._detector_options()
        await self.send(Settings(user=self.account.name, values=settings.to_dict()))

    def _detector_options(self) -> ChangeOptions:
        s = self.settings
        return ChangeOptions(heartbeat_s=None if s.quiet else s.heartbeat_s)

    def _voice(self) -> VoiceOptions:
        s = self.settings
        return VoiceOptions(
            language=s.language, voice=s.voice, rate_wpm=s.speech_rate, volume=s.volume
        )
