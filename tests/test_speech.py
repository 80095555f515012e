"""Speech in and out with the real models: espeak-ng through pyttsx3, faster-whisper tiny.en."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from speech.asr import AsrOptions, HandsFree, SpeechRecognizer, Utterance
from speech.audio import chunks, pcm16_to_float, resample, rms
from speech.errors import AudioFormatError, SpeechUnavailable, SynthesisFailed
from speech.tts import STALL_S, SpeechSynthesizer, TtsOptions, VoiceOptions, split_sentences
from speech.vad import SpeechEnded
from speech.wer import wer, word_errors

pytest.importorskip("faster_whisper", reason="the speech extra is not installed")
pytest.importorskip("pyttsx3", reason="the speech extra is not installed")

QUESTIONS = [
    "Is the door open?",
    "Read the sign.",
    "What is in front of me?",
    "Where is the pedestrian crossing?",
    "Is there a bench nearby?",
    "Which way is the exit?",
    "Are there stairs ahead?",
    "Is the traffic light green?",
    "What does the label say?",
    "Is someone standing in front of me?",
]


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


def same_speech(a: bytes, b: bytes) -> bool:
    """Whether two renderings are the same utterance. espeak-ng's retrieval mode varies the
    length by a few samples from run to run, so bytes are not compared: lengths within 3%
    and loudness envelopes (10 ms frames) that correlate."""
    if abs(len(a) - len(b)) > 0.03 * max(len(a), len(b)):
        return False
    n = min(len(a), len(b)) // 320 * 160
    env = [np.abs(pcm16_to_float(x)[:n]).reshape(-1, 160).mean(axis=1) for x in (a, b)]
    return float(np.corrcoef(env[0], env[1])[0, 1]) > 0.9


def stream_in(pcm: bytes, *, rate: int = 16_000, chunk_ms: int = 20) -> Utterance:
    utterance = Utterance(rate=rate, max_ms=30_000)
    for chunk in chunks(pcm, rate=rate, chunk_ms=chunk_ms):
        utterance.feed(chunk)
    return utterance


async def test_round_trip_navigation_questions(
    tts: SpeechSynthesizer, asr: SpeechRecognizer
) -> None:
    pairs = []
    for question in QUESTIONS:
        pcm = await tts.synthesize(question)
        transcript = await asr.transcribe_async(stream_in(pcm).samples())
        assert transcript is not None, question
        assert transcript.language == "en" and 0 < transcript.confidence <= 1
        pairs.append((question, transcript.text))
    assert wer(pairs) < 0.25, pairs


async def test_other_microphone_rates_are_resampled(
    tts: SpeechSynthesizer, asr: SpeechRecognizer
) -> None:
    pcm16k = await tts.synthesize("Where is the pedestrian crossing?")
    samples48 = resample(pcm16_to_float(pcm16k), 16_000, 48_000)
    pcm48 = (np.clip(samples48, -1, 1) * 32767).astype("<i2").tobytes()
    transcript = asr.transcribe(stream_in(pcm48, rate=48_000).samples())
    assert transcript is not None
    errors, words = word_errors("Where is the pedestrian crossing?", transcript.text)
    assert errors / words <= 0.25


@pytest.mark.parametrize("kind", ["silence", "white-noise", "clipped-blip"])
def test_no_transcript_from_non_speech(asr: SpeechRecognizer, kind: str) -> None:
    rng = np.random.default_rng(7)
    if kind == "silence":
        audio = np.zeros(3 * 16_000, dtype=np.float32)
    elif kind == "white-noise":
        audio = rng.normal(0, 0.2, 3 * 16_000).astype(np.float32)
    else:
        audio = np.zeros(2 * 16_000, dtype=np.float32)
        audio[16_000 : 16_000 + 800] = 1.0  # 50 ms, clipped
    assert asr.transcribe(audio) is None


async def test_hands_free_endpoint(tts: SpeechSynthesizer, asr: SpeechRecognizer) -> None:
    """``AsrOptions.endpoint_silence_ms`` is the silence that ends a hands-free utterance,
    and the decode started at the pause is its transcript."""
    speech = await tts.synthesize("Is the door open?")
    loud = np.nonzero(np.abs(pcm16_to_float(speech)) > 0.01)[0]
    last_word_ms = (loud[-1] + 1) / 16
    silence = bytes(2 * 16_000)  # one second
    for endpoint_ms in (400, 700):
        options = replace(asr.options, endpoint_silence_ms=endpoint_ms).vad_options()
        hands = HandsFree(asr, rate=16_000, max_ms=30_000, options=options)
        ended = None
        for index, chunk in enumerate(chunks(speech + silence, rate=16_000, chunk_ms=20)):
            ended = next((e for e in hands.feed(chunk) if isinstance(e, SpeechEnded)), None)
            if ended is not None:
                ended_at = (index + 1) * 20
                break
        assert ended is not None
        assert endpoint_ms <= ended_at - last_word_ms <= endpoint_ms + 150, ended_at
        transcript = await hands.transcript(ended)
        assert hands.speculations_used == 1 and transcript is not None
        assert word_errors("Is the door open?", transcript.text)[0] <= 1, transcript.text


def test_utterance_is_bounded_and_checks_format() -> None:
    utterance = Utterance(rate=16_000, max_ms=100)
    utterance.feed(bytes(2 * 16_000))
    assert utterance.overflow and utterance.duration_ms == 100
    with pytest.raises(AudioFormatError):
        utterance.feed(b"\x00")
    with pytest.raises(AudioFormatError):
        Utterance(rate=1_000, max_ms=100)


def test_missing_model_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpeechUnavailable, match="local"):
        SpeechRecognizer(AsrOptions(model="large-v3", device="cpu")).load()


async def test_tts_streams_chunks_sentence_by_sentence(tts: SpeechSynthesizer) -> None:
    text = "Chair ahead. The sign says platform two. Mind the step down after the door."
    assert split_sentences(text) == [
        "Chair ahead.",
        "The sign says platform two.",
        "Mind the step down after the door.",
    ]
    first_sentence = await tts.synthesize("Chair ahead.")
    received = []
    async for chunk in tts.stream(text):
        received.append(chunk)
    whole = b"".join(received)
    # 100 ms chunks at 16 kHz; each sentence's last chunk may be shorter (sent at once).
    assert max(len(c) for c in received) == 3200 and all(len(c) % 2 == 0 for c in received)
    assert same_speech(whole[: len(first_sentence)], first_sentence)  # first sentence first
    assert len(whole) > 3 * len(first_sentence)


ESPEAK_BUFFER = 22_050  # pyttsx3 initialises espeak-ng with 1000 ms callback buffers at 22.05 kHz


async def samples_of(tts: SpeechSynthesizer, text: str) -> int:
    """How many samples espeak-ng produces for ``text`` (read from its own counter)."""
    before = tts.samples_synthesised
    await tts.synthesize(text)
    return tts.samples_synthesised - before


async def test_tts_cancel_stops_at_once(tts: SpeechSynthesizer) -> None:
    """After ``cancel`` espeak-ng synthesises at most the buffer it was filling, and the
    worker takes the next utterance long before the cancelled text would have ended."""
    text = " ".join(f"Sentence number {n} of a long description." for n in range(30))
    whole_samples = await samples_of(tts, text)
    started = time.perf_counter()
    await tts.synthesize(text)
    whole_s = time.perf_counter() - started
    stop_samples = await samples_of(tts, "Stop.")
    cancel = threading.Event()
    got = []
    async for chunk in tts.stream(text, cancel=cancel):
        got.append(chunk)
        at_cancel = tts.samples_synthesised
        cancel.set()
        cancelled_at = time.perf_counter()
    assert len(got) == 1 and cancel.is_set()
    async for _ in tts.stream("Stop."):
        free_after_s = time.perf_counter() - cancelled_at  # the next utterance's first chunk
        break
    await tts.synthesize("Stop.")  # the worker has finished the abandoned "Stop." too
    after_cancel = tts.samples_synthesised - at_cancel - 2 * stop_samples
    assert after_cancel <= ESPEAK_BUFFER + 500, (after_cancel, whole_samples)
    assert whole_samples > 20 * ESPEAK_BUFFER  # so the bound above means something
    assert free_after_s < whole_s / 4, (free_after_s, whole_s)


async def test_fault_hung_synthesis_fails_alone_and_the_next_utterance_speaks(
    tts: SpeechSynthesizer,
) -> None:
    """espeak-ng hung mid-utterance (its process stopped with SIGSTOP: from outside, the
    same as a hang inside C). That utterance fails; within the stall limit the process
    is killed, a spare speaks the next session's utterance, and the event loop never
    waits meanwhile."""
    worker = tts.worker
    normal = await tts.synthesize("Door ahead.")
    hung_pid, restarts = worker.pid, worker.restarts
    assert hung_pid is not None
    long_text = " ".join(f"Sentence number {n} of a very long description." for n in range(100))
    hung = tts.stream(long_text)
    assert await anext(hung)
    os.kill(hung_pid, signal.SIGSTOP)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    other = await asyncio.wait_for(tts.synthesize("Door ahead."), timeout=STALL_S + 10)
    other_s = time.perf_counter() - started
    with pytest.raises(SynthesisFailed):
        async for _ in hung:
            pass
    done.set()
    await tick
    assert same_speech(other, normal)
    assert worker.restarts == restarts + 1 and worker.pid != hung_pid
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(hung_pid, 0)
    assert other_s < STALL_S + 2, other_s
    assert max(gaps) < 0.25, max(gaps)
    assert same_speech(await tts.synthesize("Door ahead."), normal)  # and it goes on


async def test_tts_normal_end_does_not_set_the_callers_cancel(tts: SpeechSynthesizer) -> None:
    """A finished utterance must not look cut (the server would flush the phone)."""
    alone = await tts.synthesize("I'm not sure.")
    cancel = threading.Event()
    played = b"".join([c async for c in tts.stream("I'm not sure.", cancel=cancel)])
    assert not cancel.is_set()
    assert same_speech(played, alone)


async def test_tts_consumer_that_leaves_stops_synthesis(tts: SpeechSynthesizer) -> None:
    text = " ".join(f"Sentence number {n} of a long description." for n in range(30))
    stop_samples = await samples_of(tts, "Stop.")
    stream = tts.stream(text)
    first = await anext(stream)
    at_leave = tts.samples_synthesised
    await stream.aclose()
    await tts.synthesize("Stop.")
    assert first
    assert tts.samples_synthesised - at_leave - stop_samples <= ESPEAK_BUFFER + 500


async def test_two_sessions_at_the_same_time(tts: SpeechSynthesizer) -> None:
    """espeak-ng is process-global: concurrent sessions must each get their own audio,
    unmixed, and the event loop must keep running meanwhile."""
    a_text = "Bicycle on the right, two metres. The pavement narrows ahead."
    b_text = "前方有一把椅子。左边是门。"
    b_voice = VoiceOptions(language="zh", rate_wpm=150)
    solo_a = await tts.synthesize(a_text)
    solo_b = await tts.synthesize(b_text, voice=b_voice)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    results = await asyncio.gather(
        *[
            tts.synthesize(a_text) if i % 2 == 0 else tts.synthesize(b_text, voice=b_voice)
            for i in range(6)
        ]
    )
    done.set()
    await tick_task
    for i, result in enumerate(results):
        assert same_speech(result, solo_a if i % 2 == 0 else solo_b), i
    assert not same_speech(solo_a, solo_b)
    assert ticks > 10  # the loop kept turning while espeak worked


async def test_voice_settings_change_the_audio(tts: SpeechSynthesizer) -> None:
    slow = await tts.synthesize("Stairs going down.", voice=VoiceOptions(rate_wpm=120))
    fast = await tts.synthesize("Stairs going down.", voice=VoiceOptions(rate_wpm=300))
    quiet = await tts.synthesize("Stairs going down.", voice=VoiceOptions(volume=0.2))
    loud = await tts.synthesize("Stairs going down.", voice=VoiceOptions(volume=1.0))
    assert len(slow) > 1.5 * len(fast)
    assert rms(quiet) < 0.5 * rms(loud)
    other = SpeechSynthesizer(TtsOptions(rate=24_000))
    assert len(await other.synthesize("Stairs going down.")) > 1.3 * len(loud)
