"""Hands-free end of speech: a streaming voice-activity state machine (sans-I/O).

Silero VAD (the ONNX model faster-whisper ships) runs once on each new 32 ms
window of audio, carrying its recurrent state from window to window, so the
cost is linear in the audio (about 0.1 ms of CPU per window here) instead of
re-running it over the whole utterance every 200 ms. On the probabilities a
small state machine, like pipecat's VAD analyser::

    QUIET --speech--> STARTING --vad_start_ms of speech--> SPEAKING
      ^                  |  (too short: back to QUIET)        |  silence
      |                  v                                    v
      +--endpoint_silence_ms of silence------------------ STOPPING --speech--> SPEAKING

``HandsFreeListener.feed(pcm)`` returns events: ``SpeechStarted``;
``SpeechPaused`` after ``speculate_pause_ms`` of silence (the caller may start
decoding that audio now); ``SpeechResumed`` (drop that decode); ``SpeechEnded``
with the audio to transcribe (``speculative`` says the paused audio is still the
whole utterance, so the early decode can be used); ``AudioDropped`` with a
reason. ``feed`` does only cheap work: it may run on the event loop (resampling
plus Silero on at most a few windows: well under 1 ms per 20 ms chunk, measured in
``benchmarks/speech_bench.py``). Decoding goes to the recogniser's worker.

Bounds per listener: audio arriving faster than ``max_audio_speed`` x real time
(beyond a 2 s burst) is dropped before VAD; buffered audio is at most ``max_ms``
of utterance plus ``vad_pad_ms`` of lead-in; speech beyond
``max_speech_s_per_min`` in the last minute is not sent for transcription.
Everything dropped is counted in ``stats`` by reason.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from speech.audio import check_rate, pcm16_to_float, resample
from speech.errors import SpeechUnavailable

RATE = 16_000
WINDOW = 512  # samples Silero takes at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window it also sees
WINDOW_MS = WINDOW * 1000 / RATE
BURST_S = 2.0


def load_vad_model() -> Any:
    """faster-whisper's Silero ONNX session (one per process, thread-safe to run)."""
    try:
        from faster_whisper.vad import get_vad_model
    except ImportError as exc:
        raise SpeechUnavailable(
            "voice activity detection needs faster-whisper: pip install 'seealoud[speech]'"
        ) from exc
    return get_vad_model()


class SileroStream:
    """Silero speech probabilities for one audio stream, window by window."""

    def __init__(self, model: Any | None = None) -> None:
        self._session = (model or load_vad_model()).session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, CONTEXT), dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for every whole window completed by ``samples`` (16 kHz float)."""
        audio = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        whole = audio.size // WINDOW * WINDOW
        self._pending = audio[whole:]
        if not whole:
            return np.zeros(0, dtype=np.float32)
        windows = audio[:whole].reshape(-1, WINDOW)
        contexts = np.concatenate([self._context, windows[:-1, -CONTEXT:]], axis=0)
        self._context = windows[-1:, -CONTEXT:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        return np.asarray(out, dtype=np.float32).reshape(-1)


class VadState(Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(frozen=True)
class SpeechStarted:
    at_ms: float


@dataclass(frozen=True)
class SpeechPaused:
    """A short pause: ``audio`` is the utterance so far; decoding it now may save time."""

    audio: np.ndarray = field(repr=False)
    at_ms: float
    utterance: int

    def __repr__(self) -> str:
        return f"SpeechPaused(at_ms={self.at_ms:.0f}, samples={self.audio.size})"


@dataclass(frozen=True)
class SpeechResumed:
    at_ms: float
    utterance: int


@dataclass(frozen=True)
class SpeechEnded:
    """The utterance is over: transcribe ``audio`` (16 kHz float).

    ``speculative``: no speech since the last ``SpeechPaused`` of this utterance, so
    its decode is this utterance's transcript. ``reason``: ``silence`` or ``max-length``.
    """

    audio: np.ndarray = field(repr=False)
    at_ms: float
    utterance: int
    speech_ms: float
    reason: str
    speculative: bool

    def __repr__(self) -> str:
        return (
            f"SpeechEnded(at_ms={self.at_ms:.0f}, samples={self.audio.size}, "
            f"speech_ms={self.speech_ms:.0f}, reason={self.reason!r}, "
            f"speculative={self.speculative})"
        )


@dataclass(frozen=True)
class AudioDropped:
    """Audio not listened to or not transcribed; ``reason`` is stable for metrics."""

    reason: str
    ms: float


VadEvent = SpeechStarted | SpeechPaused | SpeechResumed | SpeechEnded | AudioDropped


@dataclass
class HandsFreeStats:
    """What one listener heard and dropped (milliseconds of 16 kHz audio)."""

    audio_ms: float = 0.0
    utterances: int = 0
    dropped_ms: dict[str, float] = field(default_factory=dict)

    def drop(self, reason: str, ms: float) -> AudioDropped:
        self.dropped_ms[reason] = self.dropped_ms.get(reason, 0.0) + ms
        return AudioDropped(reason, ms)


@dataclass(kw_only=True)
class VadOptions:
    """The state machine's settings (``AsrOptions`` carries them; see there).

    Attributes:
        threshold: Speech probability that counts as speech.
        neg_threshold: Below this it counts as silence (between: no change).
        start_ms: Speech needed to go from STARTING to SPEAKING.
        endpoint_silence_ms: Silence that ends the utterance.
        speculate_pause_ms: Silence after which ``SpeechPaused`` is sent; ``None``: never.
        pad_ms: Audio kept before the speech started (lead-in).
        min_speech_ms: Utterances with less speech are dropped (``too-short``).
        max_speech_s_per_min: Speech transcribed per rolling minute; ``None``: no cap.
        max_audio_speed: Audio accepted per second of wall time, beyond a 2 s burst.
    """

    threshold: float = 0.5
    neg_threshold: float = 0.35
    start_ms: int = 96
    endpoint_silence_ms: int = 500
    speculate_pause_ms: int | None = 120
    pad_ms: int = 200
    min_speech_ms: int = 250
    max_speech_s_per_min: float | None = 30.0
    max_audio_speed: float = 1.5


class HandsFreeListener:
    """One session's hands-free microphone: PCM in, end-of-speech events out (sans-I/O)."""

    def __init__(
        self,
        *,
        rate: int,
        max_ms: int,
        options: VadOptions | None = None,
        model: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = check_rate(rate)
        self.options = o = options or VadOptions()
        self.max_samples = RATE * max_ms // 1000
        self.stats = HandsFreeStats()
        self.state = VadState.QUIET
        self._vad = SileroStream(model)
        self._clock = clock
        self._allowance = BURST_S  # seconds of audio that may arrive now (token bucket)
        self._last_fed = clock()
        self._pad: collections.deque[np.ndarray] = collections.deque()
        self._pad_size = 0
        self._unvoted = np.zeros(0, dtype=np.float32)  # audio whose window is not yet scored
        self._parts: list[np.ndarray] = []
        self._size = 0
        self._run_ms = 0.0  # STARTING: speech so far; STOPPING: silence so far
        self._speech_ms = 0.0
        self._paused = False
        self._utterance = 0
        self._heard_at = 0.0  # audio clock, ms
        self._recent: collections.deque[tuple[float, float]] = collections.deque()
        self._pad_max = RATE * o.pad_ms // 1000

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Take one chunk of PCM16 at ``rate``; cheap (see the module docstring)."""
        return self.feed_samples(resample(pcm16_to_float(pcm), self.rate, RATE))

    def feed_samples(self, samples: np.ndarray) -> list[VadEvent]:
        """``feed`` for audio already at 16 kHz float."""
        events: list[VadEvent] = []
        now = self._clock()
        speed = self.options.max_audio_speed
        self._allowance = min(BURST_S, self._allowance + max(0.0, now - self._last_fed) * speed)
        self._last_fed = now
        seconds = samples.size / RATE
        if seconds > self._allowance:
            events.append(self.stats.drop("faster-than-real-time", seconds * 1000))
            return events
        self._allowance -= seconds
        self.stats.audio_ms += seconds * 1000
        probs = self._vad.push(samples)
        audio = np.concatenate([self._unvoted, samples])
        for index, prob in enumerate(probs):
            window = audio[index * WINDOW : (index + 1) * WINDOW]
            self._heard_at += WINDOW_MS
            events.extend(self._step(float(prob), window))
        self._unvoted = audio[probs.size * WINDOW :]
        return events

    def flush(self) -> list[VadEvent]:
        """The stream ended (``audio-stop``): end an utterance in progress."""
        if self.state in (VadState.SPEAKING, VadState.STOPPING):
            return self._end("stream-end")
        self._reset()
        return []

    def _step(self, prob: float, window: np.ndarray) -> list[VadEvent]:
        o = self.options
        speech = prob >= o.threshold
        silence = prob < o.neg_threshold
        if self.state is VadState.QUIET:
            self._keep_pad(window)
            if speech:
                self.state, self._run_ms = VadState.STARTING, WINDOW_MS
                self._start_utterance()
            return []
        self._append(window)
        if self.state is VadState.STARTING:
            if speech:
                self._run_ms += WINDOW_MS
                if self._run_ms >= o.start_ms:
                    self.state, self._speech_ms = VadState.SPEAKING, self._run_ms
                    return [SpeechStarted(self._heard_at - self._run_ms)]
            elif silence:
                self.state = VadState.QUIET
                self._reset()
            return []
        events: list[VadEvent] = []
        if self._size >= self.max_samples:
            return self._end("max-length")
        if self.state is VadState.SPEAKING:
            self._speech_ms += WINDOW_MS
            if silence:
                self.state, self._run_ms, self._paused = VadState.STOPPING, WINDOW_MS, False
            return events
        # STOPPING
        if speech:
            self.state = VadState.SPEAKING
            self._speech_ms += WINDOW_MS
            if self._paused:
                events.append(SpeechResumed(self._heard_at, self._utterance))
            self._paused = False
            return events
        self._run_ms += WINDOW_MS
        pause = o.speculate_pause_ms
        if (
            pause is not None
            and not self._paused
            and self._run_ms >= pause
            and self._speech_ms >= o.min_speech_ms
            and self._budget_left_ms() >= self._speech_ms
        ):
            self._paused = True
            events.append(SpeechPaused(self._audio(), self._heard_at, self._utterance))
        if self._run_ms >= o.endpoint_silence_ms:
            events.extend(self._end("silence"))
        return events

    def _end(self, reason: str) -> list[VadEvent]:
        speech_ms, audio, paused = self._speech_ms, self._audio(), self._paused
        self.state = VadState.QUIET
        self._reset()
        if speech_ms < self.options.min_speech_ms:
            return [self.stats.drop("too-short", audio.size / RATE * 1000)]
        if speech_ms > self._budget_left_ms():
            return [self.stats.drop("speech-budget", audio.size / RATE * 1000)]
        self._recent.append((self._heard_at, speech_ms))
        self.stats.utterances += 1
        return [
            SpeechEnded(
                audio,
                self._heard_at,
                self._utterance,
                speech_ms,
                reason,
                speculative=paused and reason == "silence",
            )
        ]

    def _budget_left_ms(self) -> float:
        cap = self.options.max_speech_s_per_min
        if cap is None:
            return float("inf")
        while self._recent and self._recent[0][0] < self._heard_at - 60_000:
            self._recent.popleft()
        return cap * 1000 - sum(ms for _, ms in self._recent)

    def _start_utterance(self) -> None:
        self._utterance += 1
        self._parts, self._size = list(self._pad), self._pad_size
        self._pad.clear()
        self._pad_size = 0

    def _keep_pad(self, window: np.ndarray) -> None:
        self._pad.append(window)
        self._pad_size += window.size
        while self._pad_size - self._pad[0].size >= self._pad_max:
            self._pad_size -= self._pad.popleft().size

    def _append(self, window: np.ndarray) -> None:
        self._parts.append(window)
        self._size += window.size

    def _audio(self) -> np.ndarray:
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0].copy() if self._parts else np.zeros(0, dtype=np.float32)

    def _reset(self) -> None:
        self._parts, self._size = [], 0
        self._run_ms = self._speech_ms = 0.0
        self._paused = False
