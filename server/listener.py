"""Speech in for one session: ``audio-*`` messages to a transcript.

Chunks are resampled to 16 kHz as they arrive (cheap); the utterance ends at
``audio-stop`` (push-to-talk) or when voice activity detection hears the
speaker stop (hands-free, checked off the event loop every 200 ms of audio).
Transcription runs on the recogniser's single worker thread.
"""

from __future__ import annotations

import asyncio
import logging

from protocol import AudioChunk, AudioStart
from speech.asr import SpeechRecognizer, Transcript, Utterance
from speech.errors import AudioFormatError

log = logging.getLogger("seealoud.listener")


class ListenError(Exception):
    """Audio out of order or unusable; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Listener:
    """One session's microphone stream."""

    def __init__(self, asr: SpeechRecognizer, *, max_ms: int, endpoint_silence_ms: int) -> None:
        self.asr = asr
        self.max_ms = max_ms
        self.endpoint_silence_ms = endpoint_silence_ms
        self.utterance: Utterance | None = None
        self.mode = "push-to-talk"
        self._checking = False

    def start(self, msg: AudioStart) -> None:
        if msg.format != "pcm16" or msg.channels != 1:
            raise ListenError("unsupported-format", "audio must be pcm16, 1 channel")
        if msg.mode not in ("push-to-talk", "hands-free"):
            raise ListenError("bad-message", "mode must be push-to-talk or hands-free")
        try:
            self.utterance = Utterance(
                rate=msg.rate, max_ms=self.max_ms, endpoint_silence_ms=self.endpoint_silence_ms
            )
        except AudioFormatError as exc:
            raise ListenError("unsupported-format", str(exc)) from exc
        self.mode = msg.mode

    def feed(self, chunk: AudioChunk) -> None:
        u = self.utterance
        if u is None:
            raise ListenError("unexpected-message", "audio-chunk without audio-start")
        if chunk.rate != u.rate:
            raise ListenError(
                "unsupported-format", f"chunk rate {chunk.rate} differs from audio-start's {u.rate}"
            )
        try:
            u.feed(chunk.payload)
        except AudioFormatError as exc:
            raise ListenError("bad-message", str(exc)) from exc

    @property
    def overflowed(self) -> bool:
        return self.utterance is not None and self.utterance.overflow

    async def heard_end(self) -> bool:
        """Hands-free: whether the speaker has stopped (VAD, off the event loop)."""
        if self.mode != "hands-free" or self.utterance is None or self._checking:
            return False
        self._checking = True
        try:
            utterance = self.utterance
            return await asyncio.to_thread(utterance.endpoint, self.asr)
        finally:
            self._checking = False

    async def finish(self, *, language: str, explicit: bool = True) -> Transcript | None:
        """End the utterance and transcribe it; ``None`` when nothing was said.

        ``explicit``: the client sent ``audio-stop``; otherwise VAD (or the length
        limit) ended the utterance and, hands-free, listening goes on.
        """
        u, self.utterance = self.utterance, None
        if u is None:
            raise ListenError("unexpected-message", "audio-stop without audio-start")
        if self.mode == "hands-free" and not explicit:
            # Hands-free keeps listening: the next utterance starts with the next chunk.
            self.utterance = Utterance(
                rate=u.rate, max_ms=self.max_ms, endpoint_silence_ms=self.endpoint_silence_ms
            )
        return await self.asr.transcribe_async(u.samples(), language=language)
