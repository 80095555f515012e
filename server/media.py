"""One phone's pictures: frames -> newest-frame slot -> detector -> model slot -> analysis.

The receive task only validates a frame and drops it in the slot (newest
wins, never blocks). The detector task decodes and scores it on the detector
pool; frames it fires on go to the model slot. The analysis task answers the
next question first, else looks at the newest firing frame, and hands the
observation to the narrator. A dead or busy model costs one non-fatal
``error``; the session goes on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from protocol import CameraFrame, ErrorCode, HazardInfo, Message, ObservationMsg
from runtime import WorkerBusy, WorkerStalled
from server.analysis import AnalysisRequest
from server.context import ServerContext
from server.jpeg import frame_problem, plain_headers
from server.narrator import Narrator, Utterance
from server.slot import FrameSlot, NewestTask, PendingFrame
from vision.change import ChangeDetector, ChangeDetectorError, ChangeOptions

log = logging.getLogger("seealoud.media")

MAX_PENDING_QUESTIONS = 4
RECENT_FRAME_S = 5.0
"""A question or "read this" needs a frame at most this old (since the server got it)."""
SendError = Callable[..., Awaitable[None]]


@dataclass(kw_only=True)
class Asked:
    """A question waiting for the model."""

    text: str
    ref: str | None


class MediaPipeline:
    """See the module docstring."""

    def __init__(
        self,
        *,
        ctx: ServerContext,
        session_id: str,
        narrator: Narrator,
        offer: Callable[[Utterance | None], None],
        send: Callable[[Message], Awaitable[None]],
        send_error: SendError,
        language: Callable[[], str],
        detector: ChangeOptions,
    ) -> None:
        self.ctx = ctx
        self.session_id = session_id
        self.narrator = narrator
        self.offer = offer
        self.send = send
        self.send_error = send_error
        self.language = language
        self.slot = FrameSlot()
        self.model_slot = FrameSlot()
        self.detector = ChangeDetector(detector)
        self.questions: deque[Asked] = deque()
        self._stops = 0  # Stops so far: an answer asked for before the last one is not spoken
        self._detect = asyncio.Event()
        self._work = asyncio.Event()
        self.signs: Callable[[list[str], PendingFrame], Awaitable[None]] | None = None
        """Speaks reported signs in the text reader's words (``server/reading.py``)."""
        self.frames_rejected = 0
        self.analyses = 0
        self.detector_fires = 0
        self._sign_reading = NewestTask(f"{session_id}:signs")
        self.judged: PendingFrame | None = None
        """The newest frame the detector judged not dark: what a question is asked
        about (a frame not yet judged may be black)."""
        self._last_judged: PendingFrame | None = None

    # --- frames in (called from the receive task: no awaiting) -------------------

    def frame_problem(self, frame: CameraFrame) -> tuple[ErrorCode, str] | None:
        """Why ``frame`` is refused, checked before anything decodes it; else None."""
        cfg = self.ctx.config
        return frame_problem(frame, max_bytes=cfg.max_frame_bytes, max_pixels=cfg.max_frame_pixels)

    def put(self, frame: CameraFrame, received_at: float) -> None:
        """Keep ``frame`` (accepted by ``frame_problem``) as the newest, its metadata
        dropped before anything decodes it (``plain_headers``)."""
        frame.payload = plain_headers(frame.payload)
        before = self.slot.dropped
        self.slot.put(PendingFrame(frame=frame, received_at=received_at))
        self.ctx.metrics.frames_received += 1
        self.ctx.metrics.frames_dropped += self.slot.dropped - before
        self._detect.set()

    def stop_questions(self) -> None:
        """The user pressed Stop: the questions waiting are dropped, and the answer to
        the one with the model now is not spoken (``_analyze``)."""
        self.questions.clear()
        self._stops += 1

    def ask(self, asked: Asked) -> None:
        if len(self.questions) >= MAX_PENDING_QUESTIONS:
            self.questions.popleft()
        self.questions.append(asked)
        self._work.set()

    # --- the detector ------------------------------------------------------------

    async def run_detector(self) -> None:
        """Forever: run the change detector on the newest frame; pass firing frames on."""
        while True:
            await self._detect.wait()
            self._detect.clear()
            pending = self.slot.take_nowait()
            if pending is None:
                continue
            if not self.ctx.config.change_detection:
                self._to_model(pending, "every-frame")
                continue
            try:
                decision = await self.ctx.detector_pool.submit(
                    functools.partial(
                        self.detector.observe_jpeg, pending.frame.payload, pending.received_at
                    )
                )
            except (WorkerBusy, WorkerStalled) as exc:  # the server is overloaded: skip it
                self.ctx.metrics.frames_dropped += 1
                log.warning("session %s: change detector %s", self.session_id, type(exc).__name__)
                continue
            except ChangeDetectorError as exc:
                self._last_judged = pending
                if self.questions:
                    self._work.set()
                self.frames_rejected += 1
                self.ctx.metrics.frames_rejected += 1
                await self.send_error(ErrorCode.BAD_MESSAGE, str(exc), ref=pending.frame.id)
                continue
            self.ctx.metrics.detector_decision(
                decision.reason.value if decision.reason else decision.view_reason or "none"
            )
            self._last_judged = pending
            self.judged = None if self.detector.dark else pending
            if self.questions:
                if self.judged is None:  # asked in the dark: never sent to the model
                    self.questions.clear()
                    self.offer(self.narrator.dark_answer(time.monotonic()))
                else:
                    self._work.set()
            if decision.view_changed:  # "the camera sees nothing" is said once, on entering
                self.offer(self.narrator.view(decision.view, decision.view_reason))
            if decision.fire and decision.reason is not None:
                self.detector_fires += 1
                self.ctx.metrics.detector_fires += 1
                self._to_model(pending, decision.reason.value)
            if self.slot.pending():
                self._detect.set()

    def _to_model(self, pending: PendingFrame, reason: str) -> None:
        pending.reason = reason
        before = self.model_slot.dropped
        self.model_slot.put(pending)
        self.ctx.metrics.model_frames_dropped += self.model_slot.dropped - before
        self._work.set()

    # --- the model ---------------------------------------------------------------

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

    def recent(self) -> PendingFrame | None:
        """The newest frame if it is recent enough to ask or read about (the camera may
        be off: an answer about an old view is wrong about where the user is now)."""
        latest = self.slot.latest
        if latest is None or time.monotonic() - latest.received_at > RECENT_FRAME_S:
            return None
        return latest

    def question_frame(self) -> PendingFrame | None:
        """The frame a question is about: the newest one the detector found something
        in (with detection off, the newest). A question asked before the detector has
        judged a frame waits the few milliseconds that takes."""
        if not self.ctx.config.change_detection:
            return self.slot.latest
        if self.slot.latest is not self._last_judged:
            return None  # the newest frame is being judged; the detector wakes us after
        return self.judged

    def _next_request(self) -> tuple[AnalysisRequest, Asked | None] | None:
        frame_for_question = self.question_frame()
        if self.questions and frame_for_question is not None:
            asked = self.questions.popleft()
            self.detector.question(time.monotonic())  # counts as a model call for the cooldown
            request = AnalysisRequest(
                frame=frame_for_question,
                question=asked.text,
                reason="question",
                session=self.session_id,
                language=self.language(),
                memory=self.narrator.memory_for_prompt(),
            )
            return request, asked
        frame = self.model_slot.take_nowait()
        if frame is None:
            return None
        request = AnalysisRequest(
            frame=frame, reason=frame.reason, session=self.session_id, language=self.language()
        )
        return request, None

    async def _analyze(self, request: AnalysisRequest, asked: Asked | None) -> None:
        analyzer = self.ctx.services.analyzer
        if analyzer is None or not self.ctx.services.vision_ready():
            return  # questions were answered at once; frames wait for the model
        frame_time = request.frame.received_at
        request.on_hazard = lambda h: self._hazard_now(h, frame_time)
        ref = asked.ref if asked else None
        stops = self._stops
        started = time.monotonic()
        try:
            observation = await analyzer.analyze(request)
        except Exception as exc:  # model code (torch, CUDA, HTTP) may raise anything
            busy = isinstance(exc, WorkerBusy)
            log.warning(
                "session %s: vision %s: %s",
                self.session_id,
                "busy" if busy else "failed",
                type(exc).__name__,
            )
            if busy:
                await self.send_error(ErrorCode.BUSY, "the vision model is busy", ref=ref)
            else:
                await self.send_error(
                    ErrorCode.MODEL_FAILED, "the vision model failed on this frame", ref=ref
                )
            if asked is not None and stops == self._stops:
                self.offer(self.narrator.notice("busy") if busy else self.narrator.answer(None))
            return
        self.analyses += 1
        self.ctx.metrics.analyses += 1
        latency = time.monotonic() - started
        self.ctx.metrics.model_latency(analyzer.name, latency)
        if observation is None:
            return
        observation.id = ref
        if observation.latency_ms is None:
            observation.latency_ms = round(latency * 1000)
        await self.send(observation)
        signs, observation.signs = observation.signs, []
        if asked is not None and stops != self._stops:
            asked = None  # stopped while the model worked: a plain look (warnings still said)
            observation.answer = None
        self.speak(observation, frame_time, asked)
        if signs and self.signs is not None:
            self._read_signs(signs, request.frame)

    def _read_signs(self, signs: list[str], frame: PendingFrame) -> None:
        """Reading signs takes the OCR up to a second: beside the analysis loop, so the
        next look for obstacles never waits for it; the newest frame's signs win."""
        read = self.signs
        if read is not None:
            self._sign_reading.run(lambda: read(signs, frame))

    def close(self) -> None:
        """The session ended: stop reading signs."""
        self._sign_reading.close()

    def _hazard_now(self, hazard: HazardInfo, frame_time: float) -> None:
        """A hazard streamed out of the model before its answer finished."""
        self.offer(self.narrator.hazard(hazard, frame_time=frame_time, now=time.monotonic()))

    def speak(self, obs: ObservationMsg, frame_time: float, asked: Asked | None) -> None:
        """Hand an observation to the narrator and offer what it queued to the speaker
        (signs go through the text reader first: ``signs``)."""
        for u in self.narrator.observe(
            obs, frame_time=frame_time, now=time.monotonic(), question=asked is not None
        ):
            self.offer(u)
