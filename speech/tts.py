"""Text-to-speech: pyttsx3 driving espeak-ng, streamed as PCM16 chunks.

espeak-ng keeps global state and pyttsx3 drives it through one process-wide
callback, so it is not safe from several threads. All synthesis therefore
happens on one dedicated thread (``SpeechSynthesizer``): sessions submit
utterances, the thread synthesises them sentence by sentence, hazards first,
and streams each sentence's audio back as it is produced, so the first chunk
leaves long before the whole text is done. Cancelling an utterance stops its
synthesis at the next audio buffer (the espeak callback aborts) and drops
anything not yet delivered.

The caller's ``cancel`` event is the caller's: ``stream`` only reads it. A
consumer that stops iterating (``break``, ``aclose``, task cancelled) stops the
synthesis through a private event, so a normal end never looks like a cut.

Voices: only ids that espeak-ng itself lists reach espeak-ng (``speech.voices``);
an unknown or foreign id, or one that fails to load at run time, is replaced by
the language's default voice and reported through ``on_fallback``. Since no
client value is ever a path for espeak-ng, a job cannot make it read a file
(``/dev/zero`` hung the thread before).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import queue
import re
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from speech.audio import float_to_pcm16, pcm16_to_float, resample
from speech.errors import SpeechUnavailable
from speech.voices import VoiceFallback, default_voice, resolve_voice

log = logging.getLogger("seealoud.tts")

ESPEAK_RATE = 22_050
_SENTENCE = re.compile(r"(?<=[.!?;。！？；])\s*")


@dataclass(kw_only=True)
class VoiceOptions:
    """How an utterance sounds; from the user's settings.

    Attributes:
        language: BCP-47 code; picks the espeak-ng voice unless ``voice`` is set.
        voice: An espeak-ng voice id (``speech.voices.list_voices``), e.g.
            ``gmw/en-GB-x-rp``; one espeak-ng does not list for ``language`` is
            not used (the language's default speaks, reported as a fallback).
        rate_wpm: Speaking rate, words per minute (espeak-ng's scale, 80-450).
        volume: 0.0-1.0.
    """

    language: str = "en"
    voice: str | None = None
    rate_wpm: int = 175
    volume: float = 1.0

    def espeak_voice(self) -> str | None:
        """The listed voice id to use (``None``: espeak-ng's built-in default)."""
        return resolve_voice(self.voice, self.language)[0]


@dataclass(kw_only=True)
class TtsOptions:
    """Output format of the synthesiser.

    Attributes:
        rate: Output sample rate (Hz) of the PCM16 chunks.
        chunk_ms: Chunk length sent to the client.
    """

    rate: int = 16_000
    chunk_ms: int = 100


def split_sentences(text: str) -> list[str]:
    """Sentences (and clauses ending in ';'), so speech can start after the first."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    text: str = field(compare=False)
    voice: VoiceOptions = field(compare=False)
    output: TtsOptions = field(compare=False)
    cancel: threading.Event = field(compare=False)
    abandoned: threading.Event = field(compare=False)
    deliver: Callable[[bytes | None], None] = field(compare=False)
    fallback: Callable[[VoiceFallback], None] = field(compare=False)
    espeak_voice: str | None = field(compare=False, default=None)

    def stopped(self) -> bool:
        return self.cancel.is_set() or self.abandoned.is_set()


class SpeechSynthesizer:
    """Streams speech for any number of sessions; see the module docstring.

    Every instance in a process shares one espeak-ng thread (espeak-ng allows
    one synthesis at a time per process); instances differ only in output format.
    """

    def __init__(self, options: TtsOptions | None = None) -> None:
        self.options = options or TtsOptions()
        self._worker = _EspeakWorker.get()

    def load(self) -> None:
        """Wait until espeak-ng is initialised (blocking); raise if it cannot be."""
        self._worker.wait_ready()

    @property
    def samples_synthesised(self) -> int:
        """Samples espeak-ng has produced in this process (cancelled ones too; metrics)."""
        return self._worker.samples_synthesised

    async def stream(
        self,
        text: str,
        *,
        voice: VoiceOptions | None = None,
        cancel: threading.Event | None = None,
        priority: int = 5,
        on_fallback: Callable[[VoiceFallback], None] | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """PCM16 chunks of ``text`` at ``options.rate``; lower ``priority`` goes first.

        ``cancel`` (set by the caller, e.g. on barge-in) stops synthesis at the next
        audio buffer; ``stream`` never sets it. Leaving the iteration early stops the
        synthesis too. ``on_fallback`` is called on the event loop when the requested
        voice did not speak (refused, or failed to load) and the default voice did.
        """
        loop = asyncio.get_running_loop()
        # Bounded by the text: one chunk per ``chunk_ms`` of its audio, plus the end marker.
        out: asyncio.Queue[bytes | None] = asyncio.Queue()
        cancel = cancel or threading.Event()
        abandoned = threading.Event()

        def deliver(chunk: bytes | None) -> None:
            try:
                loop.call_soon_threadsafe(out.put_nowait, chunk)
            except RuntimeError:  # the caller's event loop has closed; nobody listens
                abandoned.set()

        def fallback(event: VoiceFallback) -> None:
            log.warning(
                "voice %r not used (%s); %s speaks", event.requested, event.reason, event.used
            )
            if on_fallback is not None:
                with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                    loop.call_soon_threadsafe(on_fallback, event)

        options = voice or VoiceOptions()
        espeak_voice, refused = resolve_voice(options.voice, options.language)
        if refused is not None:
            fallback(refused)
        self._worker.submit(
            _Job(
                priority,
                0,
                text,
                options,
                self.options,
                cancel,
                abandoned,
                deliver,
                fallback,
                espeak_voice,
            )
        )
        finished = False
        try:
            while True:
                chunk = await out.get()
                if chunk is None:
                    finished = True
                    return
                if not cancel.is_set():
                    yield chunk
        finally:
            if not finished:
                abandoned.set()  # the consumer left early: stop synthesising for nobody

    async def synthesize(
        self,
        text: str,
        *,
        voice: VoiceOptions | None = None,
        on_fallback: Callable[[VoiceFallback], None] | None = None,
    ) -> bytes:
        """All of ``text`` as one PCM16 buffer (tests, benchmarks)."""
        return b"".join([c async for c in self.stream(text, voice=voice, on_fallback=on_fallback)])


class _EspeakWorker:
    """The process's one espeak-ng thread and its priority queue."""

    _instance: _EspeakWorker | None = None
    _instance_lock = threading.Lock()

    @classmethod
    def get(cls) -> _EspeakWorker:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        self._jobs: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.samples_synthesised = 0  # every sample espeak-ng produced, cancelled ones too
        self._thread = threading.Thread(target=self._run, name="tts-espeak", daemon=True)
        self._thread.start()

    def wait_ready(self) -> None:
        self._ready.wait()
        if self._error is not None:
            raise SpeechUnavailable(str(self._error)) from self._error

    def submit(self, job: _Job) -> None:
        job.seq = next(self._seq)
        self._jobs.put(job)

    def _run(self) -> None:
        try:
            espeak, engine = _init_espeak()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            while True:  # answer every job at once: no audio
                self._jobs.get().deliver(None)
        self._ready.set()
        state: dict[str, Any] = {"job": None, "buf": []}

        def on_audio(wav: Any, numsamples: int, events: Any) -> int:
            job: _Job | None = state["job"]
            if numsamples > 0:
                self.samples_synthesised += numsamples
            if job is None or job.stopped():
                return 1  # abort synthesis
            if numsamples > 0:
                state["buf"].append(ctypes.string_at(wav, numsamples * 2))
            return 0

        espeak.SetSynthCallback(on_audio)
        while True:
            job = self._jobs.get()
            if job.stopped():
                job.deliver(None)
                continue
            state["job"] = job
            try:
                self._speak(espeak, engine, job, state)
            except Exception:
                log.exception("speech synthesis failed")
            finally:
                state["job"] = None
                job.deliver(None)

    @staticmethod
    def _speak(espeak: Any, engine: Any, job: _Job, state: dict[str, Any]) -> None:
        # pyttsx3's Engine.setProperty only queues the change for its own run loop, which
        # we do not use (it would play or write files); its espeak driver applies it now.
        driver = engine.proxy._driver
        _set_voice(driver, job)
        driver.setProperty("rate", int(job.voice.rate_wpm))
        driver.setProperty("volume", float(job.voice.volume))
        rate = job.output.rate
        step = rate * job.output.chunk_ms // 1000 * 2
        for sentence in split_sentences(job.text):
            if job.stopped():
                return
            state["buf"] = []
            espeak.Synth(sentence.encode("utf-8"), flags=espeak.ENDPAUSE | espeak.CHARS_UTF8)
            espeak.Synchronize()
            if job.stopped():
                return
            raw = b"".join(state["buf"])
            pcm = float_to_pcm16(resample(pcm16_to_float(raw), ESPEAK_RATE, rate))
            for offset in range(0, len(pcm), step):
                job.deliver(pcm[offset : offset + step])


def _set_voice(driver: Any, job: _Job) -> None:
    """Load the job's (listed) voice; if espeak-ng cannot, the language's default speaks."""
    if job.espeak_voice is None:
        return
    try:
        driver.setProperty("voice", job.espeak_voice)
        return
    except ValueError as exc:
        reason = f"espeak-ng could not load it: {exc}"
    used = default_voice(job.voice.language)
    if used == job.espeak_voice:
        used = None
    try:
        driver.setProperty("voice", used or "gmw/en")
    except ValueError:
        used = None
    requested = job.voice.voice or job.espeak_voice
    job.fallback(VoiceFallback(requested=requested, used=used, reason=reason))


def _init_espeak() -> tuple[Any, Any]:
    try:
        import pyttsx3
        from pyttsx3.drivers import _espeak
    except ImportError as exc:
        raise SpeechUnavailable(
            "speech output needs pyttsx3: pip install 'seealoud[speech]'"
        ) from exc
    except OSError as exc:  # libespeak-ng missing
        raise SpeechUnavailable(
            "speech output needs espeak-ng: sudo apt-get install espeak-ng (scripts/install.sh "
            "does this)"
        ) from exc
    try:
        engine = pyttsx3.init("espeak")
    except Exception as exc:
        raise SpeechUnavailable(f"espeak-ng could not start: {exc}") from exc
    return _espeak, engine
