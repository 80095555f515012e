"""One phone's microphone: an audio inbox, the recogniser, questions out.

The receive task drops ``audio-*`` messages in a bounded inbox and moves on;
this task feeds them on: push-to-talk into an ``Utterance`` transcribed at
``audio-stop``; hands-free into the streaming VAD (``speech.asr.HandsFree``,
well under a millisecond per chunk on the loop), whose ended utterances are
transcribed in their own task while listening goes on. Decoding always runs on
the recogniser's worker thread; control messages never wait for any of it. An
inbox that overflows (audio sent faster than real time) loses its excess,
counted, with one ``rate-limited`` error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from protocol import AudioChunk, AudioStart, AudioStop, ErrorCode, Message, TranscriptMsg
from runtime import WorkerBusy
from server.context import ServerContext
from server.languages import phrase
from speech.asr import HandsFree, SpeechRecognizer, Transcript, Utterance
from speech.errors import AudioFormatError
from speech.vad import AudioDropped, SpeechEnded, VadEvent

log = logging.getLogger("seealoud.listening")

AUDIO_INBOX = 250
"""Chunks waiting to be heard: 5 s of 20 ms chunks."""
MAX_AUDIO_CHUNK_BYTES = 64_000
MAX_DECODING = 2
"""Hands-free utterances being transcribed at once; more are dropped (counted)."""


class Listening:
    """See the module docstring."""

    def __init__(
        self,
        *,
        ctx: ServerContext,
        session_id: str,
        send: Callable[[Message], Awaitable[None]],
        send_error: Callable[..., Awaitable[None]],
        language: Callable[[], str],
        on_question: Callable[..., Awaitable[None]],
        on_nothing_heard: Callable[[], None],
        resume_mode: str | None = None,
        on_talk_end: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.session_id = session_id
        self.send = send
        self.send_error = send_error
        self.language = language
        self.on_question = on_question
        self.on_nothing_heard = on_nothing_heard
        self.on_talk_end = on_talk_end
        self._start_pending = False
        self.inbox: asyncio.Queue[AudioStart | AudioChunk | AudioStop] = asyncio.Queue(AUDIO_INBOX)
        self.mode: str | None = resume_mode
        self.rate = ctx.config.audio_rate
        self.push: Utterance | None = None
        self.hands: HandsFree | None = None
        self.dropped = 0
        self._decoding: set[asyncio.Task[None]] = set()
        self._refused = False
        self._error_sent = False
        self._overflow_reported = False

    # --- from the receive task ---------------------------------------------------

    def offer(self, message: AudioStart | AudioChunk | AudioStop) -> str | None:
        """Queue, or drop (counted) when the inbox is full. Without a recogniser the
        utterance is refused at once (the reason is returned, for one error in order
        with the session's other replies) and its chunks are dropped."""
        if isinstance(message, AudioStart):
            self._refused = self.ctx.services.asr_if_ready() is None
            if self._refused:
                return self.ctx.services.capabilities().reasons.get(
                    "speech_in", "Spoken questions are unavailable; type instead."
                )
            language = self.language()
            if self.ctx.services.language_problem(language) is not None:
                self._refused = True  # Whisper would hear nonsense; say why instead
                return phrase(language, "cannot_hear")
            self._start_pending = message.mode != "hands-free"
        elif self._refused:
            return None
        try:
            self.inbox.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            self.ctx.metrics.rate_limited += 1
            if not self._overflow_reported:
                self._overflow_reported = True
                log.warning("session %s: audio arrives faster than it is heard", self.session_id)
        return None

    @property
    def user_talking(self) -> bool:
        """The user is speaking a push-to-talk question (from its ``audio-start`` to its
        end): only warnings may be spoken over them."""
        return self._start_pending or self.push is not None

    def _talk_ended(self) -> None:
        self._start_pending = False
        if self.on_talk_end is not None:
            self.on_talk_end()

    def mode_to_resume(self) -> str | None:
        """The listening mode a reconnect continues (hands-free keeps listening)."""
        return "hands-free" if self.mode == "hands-free" else None

    # --- the task ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                message = await self.inbox.get()
                if self._overflow_reported and self.inbox.empty():
                    self._overflow_reported = False
                    await self.send_error(
                        ErrorCode.RATE_LIMITED,
                        "audio arrived faster than real time; some was dropped",
                    )
                match message:
                    case AudioStart():
                        await self._on_start(message)
                    case AudioChunk():
                        await self._on_chunk(message)
                    case AudioStop():
                        await self._on_stop(message)
        finally:
            for task in self._decoding:
                task.cancel()

    def _asr(self) -> SpeechRecognizer | None:
        return self.ctx.services.asr_if_ready()

    async def _on_start(self, start: AudioStart) -> None:
        self._error_sent = False
        try:
            await self._start(start)
        finally:
            self._start_pending = False
            if self.push is None:
                self._talk_ended()

    async def _start(self, start: AudioStart) -> None:
        if start.format != "pcm16" or start.channels != 1:
            await self.send_error(
                ErrorCode.UNSUPPORTED_FORMAT, "audio must be pcm16, 1 channel", ref=start.id
            )
            return
        if start.mode not in ("push-to-talk", "hands-free"):
            await self.send_error(
                ErrorCode.BAD_MESSAGE, "mode must be push-to-talk or hands-free", ref=start.id
            )
            return
        asr = self._asr()
        if asr is None:
            await self.send_error(
                ErrorCode.CAPABILITY_UNAVAILABLE, "Spoken questions are unavailable.", ref=start.id
            )
            return
        self.mode, self.rate = start.mode, start.rate
        self.push = self.hands = None
        try:
            if start.mode == "hands-free":
                self.hands = self._hands_free(asr)
            else:
                self.push = Utterance(rate=start.rate, max_ms=self.ctx.config.max_audio_ms)
        except AudioFormatError as exc:
            self.mode = None
            await self.send_error(ErrorCode.UNSUPPORTED_FORMAT, str(exc), ref=start.id)

    def _hands_free(self, asr: SpeechRecognizer) -> HandsFree:
        return HandsFree(
            asr, rate=self.rate, max_ms=self.ctx.config.max_audio_ms, language=self.language()
        )

    async def _on_chunk(self, chunk: AudioChunk) -> None:
        if len(chunk.payload) > MAX_AUDIO_CHUNK_BYTES:
            await self.send_error(
                ErrorCode.TOO_LARGE,
                f"audio chunk over {MAX_AUDIO_CHUNK_BYTES} bytes; send 20-100 ms chunks",
            )
            return
        if self.hands is None and self.mode == "hands-free" and (asr := self._asr()) is not None:
            self.hands = self._hands_free(asr)  # resumed: hands-free goes on without a new start
        if chunk.rate != self.rate and (self.push or self.hands):
            await self._once(
                ErrorCode.UNSUPPORTED_FORMAT,
                f"chunk rate {chunk.rate} differs from audio-start's {self.rate}",
            )
            return
        try:
            if self.hands is not None:
                self._hear(self.hands.feed(chunk.payload))
            elif self.push is not None:
                self.push.feed(chunk.payload)
                if self.push.overflow:
                    await self.send_error(
                        ErrorCode.AUDIO_TOO_LONG,
                        f"utterance longer than {self.ctx.config.max_audio_ms} ms; "
                        "transcribing what arrived",
                    )
                    await self._finish_push(None, cut=True)
            else:
                await self._once(ErrorCode.UNEXPECTED_MESSAGE, "audio-chunk without audio-start")
        except AudioFormatError as exc:
            await self._once(ErrorCode.BAD_MESSAGE, str(exc))

    async def _once(self, code: ErrorCode, text: str) -> None:
        if not self._error_sent:
            self._error_sent = True
            await self.send_error(code, text)

    def _hear(self, events: list[VadEvent]) -> None:
        for event in events:
            if isinstance(event, AudioDropped):
                self.ctx.metrics.audio_dropped(event.reason, event.ms)
            elif isinstance(event, SpeechEnded):
                if len(self._decoding) >= MAX_DECODING:
                    self.ctx.metrics.audio_dropped("decoder-busy", event.speech_ms)
                    continue
                task = asyncio.create_task(self._finish_hands_free(event))
                self._decoding.add(task)
                task.add_done_callback(self._decoding.discard)

    async def _finish_hands_free(self, ended: SpeechEnded) -> None:
        hands = self.hands
        if hands is None:
            return
        started = time.monotonic()
        try:
            transcript = await hands.transcript(ended)
            self.ctx.metrics.model_latency("faster-whisper", time.monotonic() - started, task="asr")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the recogniser's native code may raise anything
            log.warning("session %s: transcription failed: %s", self.session_id, type(exc).__name__)
            return
        if transcript is not None:  # hands-free: nothing heard means nothing said
            await self._question(transcript, None, cut=ended.reason == "max-length")

    async def _on_stop(self, stop: AudioStop) -> None:
        if self.hands is not None:
            self._hear(self.hands.listener.flush())
            self.hands, self.mode = None, None
            return
        if self.push is None:
            if not self._error_sent:
                await self.send_error(
                    ErrorCode.UNEXPECTED_MESSAGE, "audio-stop without audio-start", ref=stop.id
                )
            return
        await self._finish_push(stop.id)

    async def _finish_push(self, ref: str | None, *, cut: bool = False) -> None:
        """Transcribe the push-to-talk utterance; ``cut``: it ran over the length limit
        (the user hears that only its first part was answered)."""
        utterance, self.push, self.mode = self.push, None, None
        self._talk_ended()
        asr = self._asr()
        if utterance is None or asr is None:
            return
        started = time.monotonic()
        try:
            transcript = await asr.transcribe_async(utterance.samples(), language=self.language())
            self.ctx.metrics.model_latency("faster-whisper", time.monotonic() - started, task="asr")
        except WorkerBusy:  # many phones at once: the question is lost, the user is told
            await self.send_error(ErrorCode.BUSY, "speech recognition is busy", ref=ref)
            self.on_nothing_heard()
            return
        except Exception as exc:  # the recogniser's native code may raise anything
            log.warning("session %s: transcription failed: %s", self.session_id, type(exc).__name__)
            await self.send_error(ErrorCode.MODEL_FAILED, "speech recognition failed", ref=ref)
            self.on_nothing_heard()
            return
        if transcript is None:  # push-to-talk: the user waits for something
            await self.send(TranscriptMsg(text="", final=True, id=ref))
            self.on_nothing_heard()
            return
        await self._question(transcript, ref, cut=cut)

    async def _question(
        self, transcript: Transcript, ref: str | None, *, cut: bool = False
    ) -> None:
        await self.send(
            TranscriptMsg(
                text=transcript.text,
                language=transcript.language,
                confidence=transcript.confidence,
                audio_ms=round(transcript.audio_ms),
                id=ref,
            )
        )
        await self.on_question(transcript.text, ref, unsure=transcript.unsure, cut=cut)
