"""Speech out for one session: the narrator's queue turned into ``speech-*`` messages.

One task per session takes the narrator's next utterance, sends
``speech-start`` (with the text, so the client can show it and screen readers
can read it), streams the synthesiser's PCM as ``speech-chunk`` and ends with
``speech-stop``. An utterance that ends normally ends with ``speech-stop``
``done`` and nothing else: the phone plays every sample. ``cut(reason)``
stops the utterance being spoken: for a warning that cuts something lower
(``barge-in``) the client is told to flush its playback (``interrupt``);
for the user's own Stop the session has already acknowledged it. Either way
the utterance ends with ``speech-stop`` ``interrupted``. The narrator hears
what was really heard (``spoken``) and what was cut (``cut``), so only
speech that reached the user counts as said. Without a synthesiser the text
still goes out (start and stop, no chunks); ``tts`` is asked each time, so
speech starts as soon as the synthesiser finishes loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from protocol import Interrupt, Message, SpeechChunk, SpeechStart, SpeechStop
from server.link import LinkClosed
from server.metrics import ServerMetrics
from server.narrator import Narrator, Utterance
from speech.errors import SpeechError
from speech.tts import SpeechSynthesizer, VoiceOptions
from speech.voices import VoiceFallback

log = logging.getLogger("seealoud.speaker")

STALL_S = 5.0
"""No audio from the synthesiser for this long: the utterance fails (``speech-stop``
``failed``) rather than the session's speech waiting for ever."""
T = TypeVar("T")


class Speaker:
    """Speaks one session's utterances in order, one at a time."""

    def __init__(
        self,
        *,
        narrator: Narrator,
        send: Callable[[Message], Awaitable[None]],
        tts: Callable[[], SpeechSynthesizer | None],
        voice: Callable[[], VoiceOptions],
        rate: int,
        lead_s: float = 0.5,
        on_voice_fallback: Callable[[VoiceFallback], None] | None = None,
        metrics: ServerMetrics | None = None,
        stall_s: float = STALL_S,
        hold: Callable[[], bool] | None = None,
    ) -> None:
        self.narrator = narrator
        narrator.wake = self.wake  # the newest session's speaker (a resume takes it over)
        self._send = send
        self.tts = tts
        self._voice = voice
        self.rate = rate
        self.lead_s = lead_s
        self.on_voice_fallback = on_voice_fallback
        self.metrics = metrics
        if metrics is not None:  # the narrator outlives a connection: each session re-binds it
            narrator.on_stale = lambda u: metrics.stale_drop(u.wire)
        self.stall_s = stall_s
        self.hold = hold
        """While true (the user is talking), only warnings are spoken; call ``wake``
        when it turns false."""
        self.current: Utterance | None = None
        self._cancel: threading.Event | None = None
        self._cut_reason: str | None = None
        self._wake = asyncio.Event()
        self._cut = asyncio.Event()
        # Timings of the last few utterances (monotonic), for the benchmarks; bounded
        # so a long session does not grow.
        self.first_chunk_at: dict[str, float] = {}
        self.stopped_at: dict[str, float] = {}

    def wake(self) -> None:
        """Something was queued: look at the narrator again."""
        self._wake.set()

    def offer(self, utterance: Utterance | None) -> None:
        """An utterance was queued; a hazard cuts a lower-lane one short."""
        if utterance is None:
            return
        current = self.current
        if current is not None and self.narrator.preempts(utterance, current):
            self.cut("barge-in")
            self.narrator.requeue(current)  # answers and readings: said again after
        self.wake()

    def cut(self, reason: str = "user") -> None:
        """Stop the utterance being spoken now (its stop message follows from ``run``).

        ``reason``: ``user`` (Stop, or the user started talking: the session has
        acknowledged it) or ``barge-in`` (a warning cuts it: the phone is told to flush).
        """
        if self._cancel is not None and self._cut_reason is None:
            self._cut_reason = reason
            self._cancel.set()
            self._cut.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                held = self.hold is not None and self.hold()
                utterance = self.narrator.next(time.monotonic(), hazards_only=held)
                if utterance is None:
                    break
                await self._speak(utterance)

    async def _speak(self, u: Utterance) -> None:
        cancel = threading.Event()
        self.current, self._cancel, self._cut_reason = u, cancel, None
        self._cut.clear()
        heard = dropped = False
        try:
            await self._send(
                SpeechStart(utterance=u.id, priority=u.wire, text=u.text, rate=self.rate)
            )
            if self.metrics is not None:
                self.metrics.utterance(u.wire)
            failed = False
            tts = self.tts()
            if tts is not None:
                try:
                    await self._stream(
                        u,
                        tts.stream(
                            u.text,
                            voice=self._voice(),
                            cancel=cancel,
                            priority=int(u.lane),
                            on_fallback=self.on_voice_fallback,
                        ),
                    )
                except SpeechError as exc:
                    failed = True
                    log.warning("speech synthesis failed: %s", exc)
            reason = self._cut_reason
            if reason == "barge-in":
                await self._send(Interrupt(reason="barge-in"))
            if reason is not None:
                await self._send(SpeechStop(utterance=u.id, reason="interrupted"))
            elif failed:
                await self._send(SpeechStop(utterance=u.id, reason="failed"))
            else:
                await self._send(SpeechStop(utterance=u.id, reason="done"))
                heard = True
            _remember(self.stopped_at, u.id, time.monotonic())
        except (asyncio.CancelledError, LinkClosed):
            dropped = True  # the session ended under it (a dropped network, bye)
            raise
        finally:
            if heard:
                self.narrator.spoken(u, time.monotonic())
            elif dropped:
                self.narrator.dropped(u, time.monotonic())
            else:
                self.narrator.cut(u)
            self.current, self._cancel = None, None

    async def _stream(self, u: Utterance, chunks: AsyncIterator[bytes]) -> None:
        """Send chunks until the text is spoken or ``cut()`` is called, whichever is first:
        a cut does not wait for the synthesiser to notice.

        Chunks are paced to real time, ``lead_s`` ahead of playback: synthesis is 100x
        faster than speech, and a phone holding 20 s of queued audio could not be cut
        short by a warning the server knows nothing about, nor would ``current`` say
        what the user is hearing.
        """
        cut = asyncio.ensure_future(self._cut.wait())
        seq = 0
        started = time.monotonic()
        sent_s = 0.0
        try:
            while True:
                step = asyncio.ensure_future(anext(chunks))
                done, _ = await asyncio.wait(
                    {step, cut}, timeout=self.stall_s, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # the synthesiser hangs: this utterance fails, the session goes on
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
                    raise SpeechError(f"no audio from the synthesiser in {self.stall_s:g} s")
                if step not in done:
                    step.cancel()  # the generator's own cleanup cancels the synthesis
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
                    return
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    return
                if seq == 0:
                    now = time.monotonic()
                    _remember(self.first_chunk_at, u.id, now)
                    if self.metrics is not None:
                        self.metrics.model_latency("espeak-ng", now - started, task="tts")
                ahead = started + sent_s - self.lead_s - time.monotonic()
                if ahead > 0:
                    await asyncio.wait({cut}, timeout=ahead)  # pacing; a cut ends it early
                    if cut.done():
                        return
                await self._send(
                    SpeechChunk(utterance=u.id, seq=seq, rate=self.rate, payload=chunk)
                )
                sent_s += len(chunk) / 2 / self.rate
                seq += 1
        finally:
            cut.cancel()
            await chunks.aclose()  # type: ignore[attr-defined]  # async generator


def _remember(log: dict[str, T], key: str, value: T, keep: int = 256) -> None:
    log[key] = value
    while len(log) > keep:
        del log[next(iter(log))]
