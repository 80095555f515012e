"""Hands-free end of speech: the streaming VAD state machine, its bounds, the asyncio shell."""

from __future__ import annotations

import numpy as np
import pytest

from speech.asr import AsrOptions, HandsFree, SpeechRecognizer
from speech.audio import chunks, float_to_pcm16, pcm16_to_float
from speech.tts import SpeechSynthesizer
from speech.vad import (
    AudioDropped,
    HandsFreeListener,
    SileroStream,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    VadEvent,
    VadOptions,
    VadState,
    load_vad_model,
)
from speech.wer import word_errors

pytest.importorskip("faster_whisper", reason="the speech extra is not installed")
pytest.importorskip("pyttsx3", reason="the speech extra is not installed")


class Clock:
    """The listener's wall clock, advanced by the test as a microphone would (20 ms a chunk)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def tts() -> SpeechSynthesizer:
    synth = SpeechSynthesizer()
    synth.load()
    return synth


@pytest.fixture(scope="module")
def asr() -> SpeechRecognizer:
    recognizer = SpeechRecognizer(AsrOptions(model="tiny.en", device="cpu"))
    recognizer.load()
    return recognizer


def run(listener: HandsFreeListener, pcm: bytes, clock: Clock) -> list[tuple[int, VadEvent]]:
    """Feed 20 ms chunks in real time (by the clock); (chunk end in ms, event) pairs."""
    out = []
    for index, chunk in enumerate(chunks(pcm, rate=16_000, chunk_ms=20)):
        clock.now += 0.02
        out += [((index + 1) * 20, e) for e in listener.feed(chunk)]
    return out


def speech_end_ms(pcm: bytes) -> float:
    loud = np.nonzero(np.abs(pcm16_to_float(pcm)) > 0.01)[0]
    return loud[-1] / 16


def test_streamed_probabilities_equal_the_batched_model() -> None:
    rng = np.random.default_rng(3)
    audio = rng.normal(0, 0.1, 512 * 40).astype(np.float32)
    batched = load_vad_model()(audio).reshape(-1)
    stream = SileroStream()
    parts = [stream.push(audio[i : i + 320]) for i in range(0, audio.size, 320)]
    assert np.allclose(np.concatenate(parts), batched, atol=1e-5)


async def test_a_question_ends_once_and_the_early_decode_is_used(
    tts: SpeechSynthesizer, asr: SpeechRecognizer
) -> None:
    pcm = await tts.synthesize("Is the door open?")
    clock = Clock()
    hands = HandsFree(asr, rate=16_000, max_ms=30_000, clock=clock)
    events = []
    for index, chunk in enumerate(chunks(pcm + bytes(32_000), rate=16_000, chunk_ms=20)):
        clock.now += 0.02
        events += [((index + 1) * 20, e) for e in hands.feed(chunk)]
    kinds = [type(e) for _, e in events]
    assert kinds == [SpeechStarted, SpeechPaused, SpeechEnded], events
    at, ended = events[-1]
    assert isinstance(ended, SpeechEnded) and ended.speculative and ended.reason == "silence"
    silence = asr.options.endpoint_silence_ms
    assert speech_end_ms(pcm) + silence <= at <= speech_end_ms(pcm) + silence + 200
    transcript = await hands.transcript(ended)
    assert transcript is not None and hands.speculations_used == 1
    errors, words = word_errors("Is the door open?", transcript.text)
    assert errors / words <= 0.25


async def test_a_short_pause_resumes_the_same_utterance(
    tts: SpeechSynthesizer, asr: SpeechRecognizer
) -> None:
    first = await tts.synthesize("Is the door open?")
    second = await tts.synthesize("Where is the exit?")
    gap = bytes(2 * 16 * 150)  # 150 ms more silence than espeak-ng's own pause
    clock = Clock()
    hands = HandsFree(asr, rate=16_000, max_ms=30_000, clock=clock)
    events = []
    for chunk in chunks(first + gap + second + bytes(32_000), rate=16_000, chunk_ms=20):
        clock.now += 0.02
        events += hands.feed(chunk)
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 1 and any(isinstance(e, SpeechResumed) for e in events), events
    transcript = await hands.transcript(ended[0])
    assert transcript is not None
    assert "door" in transcript.text.lower() and "exit" in transcript.text.lower()
    assert hands.speculations_wasted >= 1


def test_vad_cost_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each 32 ms window is scored once, however long the utterance."""
    model = load_vad_model()
    scored = []
    real_run = model.session.run

    class Counting:
        def run(self, names: object, feeds: dict[str, np.ndarray]) -> object:
            scored.append(feeds["input"].shape[0])
            return real_run(names, feeds)

    class Model:
        session = Counting()

    rng = np.random.default_rng(1)
    audio = float_to_pcm16(rng.normal(0, 0.2, 16_000 * 20).astype(np.float32))
    options = VadOptions(max_audio_speed=float("inf"))
    listener = HandsFreeListener(rate=16_000, max_ms=60_000, options=options, model=Model())
    run(listener, audio, Clock())
    assert sum(scored) == len(audio) // 2 // 512


async def test_audio_faster_than_real_time_is_dropped_and_counted(
    tts: SpeechSynthesizer,
) -> None:
    pcm = await tts.synthesize("Is the door open?") * 4
    clock = Clock()
    listener = HandsFreeListener(rate=16_000, max_ms=30_000, clock=clock)
    for chunk in chunks(pcm, rate=16_000, chunk_ms=20):
        clock.now += 0.002  # ten times real time
        listener.feed(chunk)
    total_ms = len(pcm) / 32
    heard = listener.stats.audio_ms
    dropped = listener.stats.dropped_ms["faster-than-real-time"]
    assert heard + dropped == pytest.approx(total_ms)
    assert heard <= 2_000 + 1.5 * clock.now * 1000 + 20  # burst + 1.5x the wall time


async def test_speech_per_minute_is_capped(tts: SpeechSynthesizer) -> None:
    question = await tts.synthesize("Where is the pedestrian crossing?") + bytes(32_000)
    clock = Clock()
    listener = HandsFreeListener(
        rate=16_000, max_ms=30_000, options=VadOptions(max_speech_s_per_min=5.0), clock=clock
    )
    events = run(listener, question * 6, clock)
    ended = [e for _, e in events if isinstance(e, SpeechEnded)]
    dropped = [e for _, e in events if isinstance(e, AudioDropped)]
    speech = sum(e.speech_ms for e in ended)
    assert ended and dropped and all(d.reason == "speech-budget" for d in dropped)
    assert speech <= 5_000 and len(ended) + len(dropped) == 6
    assert listener.stats.dropped_ms["speech-budget"] > 0


async def test_an_endless_utterance_is_cut_at_max_length(tts: SpeechSynthesizer) -> None:
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)
    pcm = await tts.synthesize(text)
    clock = Clock()
    listener = HandsFreeListener(rate=16_000, max_ms=3_000, clock=clock)
    events = run(listener, pcm, clock)
    ended = [e for _, e in events if isinstance(e, SpeechEnded)]
    assert ended and ended[0].reason == "max-length"
    assert all(e.audio.size <= 16 * (3_000 + 32) for e in ended)


def test_a_blip_is_not_speech() -> None:
    audio = np.zeros(16_000 * 2, dtype=np.float32)
    audio[16_000 : 16_000 + 800] = 0.9
    clock = Clock()
    listener = HandsFreeListener(rate=16_000, max_ms=30_000, clock=clock)
    events = run(listener, float_to_pcm16(audio), clock)
    assert not [e for _, e in events if isinstance(e, SpeechEnded)]
    assert listener.state is VadState.QUIET


def test_which_languages_the_model_hears(asr: SpeechRecognizer) -> None:
    assert asr.english_only and asr.can_hear("en") and asr.can_hear("en-GB")
    assert not asr.can_hear("zh") and not asr.can_hear("fr")
    reason = asr.cannot_hear_reason("zh")
    assert reason is not None
    assert reason.startswith("This server cannot understand spoken questions in zh yet")
    named = asr.cannot_hear_reason("fr", "Français")
    assert named is not None and "in Français yet" in named and named.endswith(".")
    assert 'asr_model = "small"' in reason and "--asr-model" not in reason  # no such flag
    assert asr.cannot_hear_reason("en") is None
    multilingual = SpeechRecognizer(AsrOptions(model="small"))  # not loaded: by its name
    assert multilingual.can_hear("zh") and multilingual.can_hear("fr")
