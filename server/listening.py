"""One phone's microphone: an audio inbox, the recogniser, questions out.

The receive task drops ``audio-*`` messages in a bounded inbox and moves on;
this task feeds them to the ``Listener`` (resampling, VAD) and awaits the
transcription on the recogniser's worker thread. Control messages never wait
for any of it. An inbox that overflows (a client sending audio faster than
real time) loses its excess, counted, with one ``rate-limited`` error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from protocol import AudioChunk, AudioStart, AudioStop, ErrorCode, Message, TranscriptMsg
from server.context import ServerContext
from server.listener import Listener, ListenError

log = logging.getLogger("seealoud.listening")

AUDIO_INBOX = 250
"""Chunks waiting for the recogniser: 5 s of 20 ms chunks."""

MAX_AUDIO_CHUNK_BYTES = 64_000


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
        on_speech: Callable[[], None],
        on_nothing_heard: Callable[[], None],
        later: Callable[[Callable[[], Awaitable[None]]], None],
        resume_mode: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.session_id = session_id
        self.send = send
        self.send_error = send_error
        self.language = language
        self.on_question = on_question
        self.on_speech = on_speech
        self.on_nothing_heard = on_nothing_heard
        self.later = later
        self._refused = False
        self.inbox: asyncio.Queue[AudioStart | AudioChunk | AudioStop] = asyncio.Queue(AUDIO_INBOX)
        self.listener: Listener | None = None
        self.resume_mode = resume_mode
        self.dropped = 0
        self._error_sent = False
        self._overflow_reported = False

    def offer(self, message: AudioStart | AudioChunk | AudioStop) -> None:
        """From the receive task: queue, or drop (counted) when the inbox is full. Without
        a recogniser the utterance is refused at once, with one error (in order with the
        session's other replies), and its chunks are dropped."""
        if isinstance(message, AudioStart):
            self._refused = self.ctx.services.asr_if_ready() is None
            if self._refused:
                reason = self.ctx.services.capabilities().reasons.get(
                    "speech_in", "Spoken questions are unavailable; type instead."
                )
                ref = message.id
                self.later(
                    lambda: self.send_error(ErrorCode.CAPABILITY_UNAVAILABLE, reason, ref=ref)
                )
                return
        elif self._refused:
            return
        try:
            self.inbox.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            self.ctx.metrics.rate_limited += 1
            if not self._overflow_reported:
                self._overflow_reported = True
                log.warning("session %s: audio arrives faster than it is heard", self.session_id)

    def mode_to_resume(self) -> str | None:
        """The listening mode a reconnect continues (hands-free keeps listening)."""
        if self.listener is not None and self.listener.mode == "hands-free":
            return "hands-free"
        return None

    async def run(self) -> None:
        if self.resume_mode == "hands-free":
            self._start(AudioStart(mode="hands-free", rate=self.ctx.config.audio_rate))
        while True:
            message = await self.inbox.get()
            if self._overflow_reported and self.inbox.empty():
                self._overflow_reported = False
                await self.send_error(
                    ErrorCode.RATE_LIMITED, "audio arrived faster than real time; some was dropped"
                )
            match message:
                case AudioStart():
                    await self._on_start(message)
                case AudioChunk():
                    await self._on_chunk(message)
                case AudioStop():
                    await self._on_stop(message)

    def _start(self, start: AudioStart) -> bool:
        asr = self.ctx.services.asr_if_ready()
        if asr is None:
            return False
        if self.listener is None or self.listener.asr is not asr:
            self.listener = Listener(
                asr, max_ms=self.ctx.config.max_audio_ms, endpoint_silence_ms=700
            )
        self.listener.start(start)
        return True

    async def _on_start(self, start: AudioStart) -> None:
        self._error_sent = False
        try:
            started = self._start(start)
        except ListenError as exc:
            await self.send_error(exc.code, str(exc), ref=start.id)
            return
        if not started:  # the recogniser went away between offer and now
            await self.send_error(
                ErrorCode.CAPABILITY_UNAVAILABLE, "Spoken questions are unavailable.", ref=start.id
            )
            self._error_sent = True

    async def _on_chunk(self, chunk: AudioChunk) -> None:
        if len(chunk.payload) > MAX_AUDIO_CHUNK_BYTES:
            await self.send_error(
                ErrorCode.TOO_LARGE,
                f"audio chunk over {MAX_AUDIO_CHUNK_BYTES} bytes; send 20-100 ms chunks",
            )
            return
        listener = self.listener
        if listener is None or listener.utterance is None:
            if not self._error_sent:
                self._error_sent = True
                await self.send_error(
                    ErrorCode.UNEXPECTED_MESSAGE, "audio-chunk without audio-start"
                )
            return
        try:
            listener.feed(chunk)
        except ListenError as exc:
            if not self._error_sent:
                self._error_sent = True
                await self.send_error(exc.code, str(exc))
            return
        if listener.overflowed:
            if listener.mode != "hands-free":
                await self.send_error(
                    ErrorCode.AUDIO_TOO_LONG,
                    f"utterance longer than {self.ctx.config.max_audio_ms} ms; "
                    "transcribing what arrived",
                )
            await self._transcribe(None, explicit=False)
        elif await listener.heard_end():
            await self._transcribe(None, explicit=False)

    async def _on_stop(self, stop: AudioStop) -> None:
        if self.listener is None or self.listener.utterance is None:
            if not self._error_sent:
                await self.send_error(
                    ErrorCode.UNEXPECTED_MESSAGE, "audio-stop without audio-start", ref=stop.id
                )
            return
        await self._transcribe(stop.id)

    async def _transcribe(self, ref: str | None, *, explicit: bool = True) -> None:
        assert self.listener is not None
        try:
            transcript = await self.listener.finish(language=self.language(), explicit=explicit)
        except ListenError:
            return
        except Exception as exc:  # the recogniser's native code may raise anything
            log.warning("session %s: transcription failed: %s", self.session_id, type(exc).__name__)
            await self.send_error(ErrorCode.MODEL_FAILED, "speech recognition failed", ref=ref)
            if explicit:
                self.on_nothing_heard()
            return
        if transcript is None:
            if explicit:  # push-to-talk: the user waits for something
                await self.send(TranscriptMsg(text="", final=True, id=ref))
                self.on_nothing_heard()
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
        await self.on_question(transcript.text, ref)
