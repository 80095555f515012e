"""Text-to-speech: pyttsx3 driving espeak-ng, streamed as PCM16 chunks.

espeak-ng keeps global state and pyttsx3 drives it through one process-wide
callback, so it is not safe from several threads, and a job that hangs inside
it cannot be rescued by another thread of the same process. All synthesis
therefore happens in one supervised child process (``runtime.ProcessWorker``,
spawned): sessions submit utterances to its bounded queue, hazards first; the
child synthesises them sentence by sentence and streams each sentence's audio
back as it is produced, so the first chunk leaves long before the whole text is
done. A job that sends nothing for ``STALL_S`` (espeak-ng hung) fails with
``SynthesisFailed``; the child is killed and a spare child, already started,
speaks the next utterance at once. Cancelling an utterance stops its synthesis
at the next audio buffer (the child reads a shared stop flag in espeak's
callback) and drops anything not yet delivered.

The caller's ``cancel`` event is the caller's: ``stream`` only reads it. A
consumer that stops iterating (``break``, ``aclose``, task cancelled) stops the
synthesis too, so a normal end never looks like a cut.

Voices: only ids that espeak-ng itself lists reach espeak-ng (``speech.voices``);
an unknown or foreign id, or one that fails to load at run time, is replaced by
the language's default voice and reported through ``on_fallback``. Since no
client value is ever a path for espeak-ng, a job cannot make it read a file
(``/dev/zero`` hung the synthesis thread before).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import re
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from runtime import Channel, ProcessWorker, WorkerBusy
from speech.audio import float_to_pcm16, pcm16_to_float, resample
from speech.errors import SpeechUnavailable, SynthesisFailed
from speech.voices import VoiceFallback, default_voice, resolve_voice

log = logging.getLogger("seealoud.tts")

ESPEAK_RATE = 22_050
STALL_S = 3.0
"""A job whose child sends nothing this long is hung: the child is killed and replaced.
Synthesis runs about 100x faster than speech; one sentence takes milliseconds."""
MAX_PENDING = 64
"""Utterances waiting for the synthesiser (all sessions); more are refused at once."""
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


@dataclass(frozen=True)
class _Spec:
    """One job as the child sees it (pickled): only listed voice ids, no paths."""

    text: str
    language: str
    requested: str | None
    espeak_voice: str | None
    rate_wpm: int
    volume: float
    rate: int
    chunk_ms: int


class SpeechSynthesizer:
    """Streams speech for any number of sessions; see the module docstring.

    Every instance in a process shares one espeak-ng child (espeak-ng allows one
    synthesis at a time per process); instances differ only in output format.
    """

    _shared: ProcessWorker | None = None
    _shared_lock = threading.Lock()

    def __init__(self, options: TtsOptions | None = None) -> None:
        self.options = options or TtsOptions()
        with SpeechSynthesizer._shared_lock:
            if SpeechSynthesizer._shared is None:
                SpeechSynthesizer._shared = ProcessWorker(
                    "tts-espeak",
                    "speech.tts:serve_espeak",
                    max_pending=MAX_PENDING,
                    stall_s=STALL_S,
                )
            self._worker = SpeechSynthesizer._shared

    def load(self) -> None:
        """Wait until espeak-ng is initialised (blocking); raise if it cannot be."""
        error = self._worker.wait_ready()
        if error is not None:
            raise SpeechUnavailable(error)

    @property
    def samples_synthesised(self) -> int:
        """Samples espeak-ng has produced in this process's children (cancelled ones
        too; metrics)."""
        return self._worker.counted

    @property
    def worker(self) -> ProcessWorker:
        """The supervised espeak-ng process (pid, restarts; tests and operators)."""
        return self._worker

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
        Raises ``SynthesisFailed`` when the queue is full or the synthesis hung or
        crashed (the synthesiser has restarted by then).
        """
        loop = asyncio.get_running_loop()
        # Bounded by the text: one chunk per ``chunk_ms`` of its audio, plus the end.
        out: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        cancel = cancel or threading.Event()
        abandoned = threading.Event()

        def put(item: bytes | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(out.put_nowait, item)
            except RuntimeError:  # the caller's event loop has closed; nobody listens
                abandoned.set()

        def fallback(event: VoiceFallback) -> None:
            log.warning(
                "voice %r not used (%s); %s speaks", event.requested, event.reason, event.used
            )
            if on_fallback is not None:
                with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                    loop.call_soon_threadsafe(on_fallback, event)

        def on_message(message: tuple[str, Any]) -> None:
            kind, body = message
            if kind == "audio":
                for chunk in body:
                    put(chunk)
            else:
                fallback(VoiceFallback(requested=body[0], used=body[1], reason=body[2]))

        def on_done(error: BaseException | None) -> None:
            put(error)

        options = voice or VoiceOptions()
        espeak_voice, refused = resolve_voice(options.voice, options.language)
        if refused is not None:
            fallback(refused)
        spec = _Spec(
            text=text,
            language=options.language,
            requested=options.voice or espeak_voice,
            espeak_voice=espeak_voice,
            rate_wpm=int(options.rate_wpm),
            volume=float(options.volume),
            rate=self.options.rate,
            chunk_ms=self.options.chunk_ms,
        )
        try:
            ticket = self._worker.submit(
                spec,
                priority=priority,
                on_message=on_message,
                on_done=on_done,
                stopped=lambda: cancel.is_set() or abandoned.is_set(),
            )
        except WorkerBusy as exc:
            raise SynthesisFailed(f"speech synthesis is busy: {exc}") from exc
        finished = False
        try:
            while True:
                if cancel.is_set():
                    self._worker.stop(ticket)  # at once: do not wait for the dispatcher
                item = await out.get()
                if item is None:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    if cancel.is_set():
                        return
                    raise SynthesisFailed(f"speech synthesis failed: {item}") from item
                if not cancel.is_set():
                    yield item
        finally:
            if not finished:
                abandoned.set()  # the consumer left early: stop synthesising for nobody
                self._worker.stop(ticket)

    async def synthesize(
        self,
        text: str,
        *,
        voice: VoiceOptions | None = None,
        on_fallback: Callable[[VoiceFallback], None] | None = None,
    ) -> bytes:
        """All of ``text`` as one PCM16 buffer (tests, benchmarks)."""
        return b"".join([c async for c in self.stream(text, voice=voice, on_fallback=on_fallback)])


# --- the child process ------------------------------------------------------------


def serve_espeak(channel: Channel) -> None:
    """The espeak-ng child's main loop (``runtime.ProcessWorker`` runs it)."""
    try:
        espeak, engine = _init_espeak()
    except SpeechUnavailable as exc:
        channel.ready(str(exc))
        return
    channel.ready()
    state: dict[str, Any] = {"job": 0, "buf": []}

    def on_audio(wav: Any, numsamples: int, events: Any) -> int:
        job = state["job"]
        if numsamples > 0:
            channel.count(numsamples)
        if job == 0 or channel.stopped(job):
            return 1  # abort synthesis
        if numsamples > 0:
            state["buf"].append(ctypes.string_at(wav, numsamples * 2))
        return 0

    espeak.SetSynthCallback(on_audio)
    for job_id, spec in channel.jobs():
        state["job"] = job_id
        try:
            _speak(espeak, engine, job_id, spec, channel, state)
        except Exception as exc:
            channel.done(job_id, f"{type(exc).__name__}: {exc}")
            continue
        finally:
            state["job"] = 0
        channel.done(job_id)


def _speak(
    espeak: Any, engine: Any, job_id: int, spec: _Spec, channel: Channel, state: dict[str, Any]
) -> None:
    # pyttsx3's Engine.setProperty only queues the change for its own run loop, which
    # we do not use (it would play or write files); its espeak driver applies it now.
    driver = engine.proxy._driver
    _set_voice(driver, job_id, spec, channel)
    driver.setProperty("rate", spec.rate_wpm)
    driver.setProperty("volume", spec.volume)
    step = spec.rate * spec.chunk_ms // 1000 * 2
    for sentence in split_sentences(spec.text):
        if channel.stopped(job_id):
            return
        state["buf"] = []
        espeak.Synth(sentence.encode("utf-8"), flags=espeak.ENDPAUSE | espeak.CHARS_UTF8)
        espeak.Synchronize()
        if channel.stopped(job_id):
            return
        raw = b"".join(state["buf"])
        pcm = float_to_pcm16(resample(pcm16_to_float(raw), ESPEAK_RATE, spec.rate))
        channel.send(job_id, ("audio", [pcm[o : o + step] for o in range(0, len(pcm), step)]))


def _set_voice(driver: Any, job_id: int, spec: _Spec, channel: Channel) -> None:
    """Load the job's (listed) voice; if espeak-ng cannot, the language's default speaks."""
    if spec.espeak_voice is None:
        return
    try:
        driver.setProperty("voice", spec.espeak_voice)
        return
    except ValueError as exc:
        reason = f"espeak-ng could not load it: {exc}"
    used = default_voice(spec.language)
    if used == spec.espeak_voice:
        used = None
    try:
        driver.setProperty("voice", used or "gmw/en")
    except ValueError:
        used = None
    channel.send(job_id, ("fallback", (spec.requested, used, reason)))


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
