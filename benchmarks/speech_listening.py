"""Listening figures for ``speech_bench.py``: confidence (false accept / reject), hands-free
end of speech -> transcript, and CPU per minute of hands-free audio (old endpoint vs streaming).

Noise is made here: pink noise (1/f power, FFT-shaped white noise) and babble
(five espeak-ng voices reading other sentences, summed), mixed at a given SNR
against the question's own level.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from benchmarks.common import percentile
from speech.asr import RATE, HandsFree, SpeechRecognizer, Transcript
from speech.audio import chunks, float_to_pcm16, pcm16_to_float
from speech.tts import SpeechSynthesizer, VoiceOptions
from speech.vad import HandsFreeListener, SpeechEnded, SpeechPaused
from speech.wer import word_errors

TUNING = [
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
HELD_OUT = [
    "How many people are waiting at the bus stop?",
    "Can you read the menu on the wall?",
    "Is the lift on my left or my right?",
    "What colour is the car parked ahead?",
    "Is there a step down after the door?",
    "Where is the nearest free seat?",
    "Does the shop look open?",
    "What number is on the bus?",
    "Is the floor wet in front of me?",
    "Which platform does the train leave from?",
]
TUNING_VOICES = ["gmw/en", "gmw/en-US"]
HELD_OUT_VOICES = ["gmw/en-GB-x-rp", "gmw/en-GB-scotland"]
BABBLE_TEXT = [
    ("gmw/en-US", "The weather was lovely yesterday and we walked along the river for hours."),
    ("gmw/en", "I told him the meeting had moved to Thursday but he never listens to me."),
    ("gmw/en-GB-x-rp", "Could you pass the salt, and perhaps the pepper as well, thank you."),
    ("gmw/en-029", "My sister bought a new bicycle and rides it to work every single morning."),
    ("gmw/en-US-nyc", "They say the train will be late again because of the works on the line."),
]
CONDITIONS = [("clean", None), ("pink noise 10 dB", 10.0), ("babble 5 dB", 5.0)]


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


async def babble_noise(synth: SpeechSynthesizer, n: int) -> np.ndarray:
    mix = np.zeros(n, dtype=np.float32)
    for offset, (voice, text) in enumerate(BABBLE_TEXT):
        audio = pcm16_to_float(await synth.synthesize(text, voice=VoiceOptions(voice=voice)))
        audio = np.roll(np.resize(audio, n), offset * 3_000)  # looped, staggered
        mix += audio / max(1e-6, float(np.sqrt(np.mean(audio**2))))
    return mix / float(np.sqrt(np.mean(mix**2)))


def mix_at(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    voiced = speech[np.abs(speech) > 0.01]
    level = float(np.sqrt(np.mean(voiced**2))) if voiced.size else 0.1
    out = speech + noise[: speech.size] * level / (10 ** (snr_db / 20))
    return np.clip(out, -1, 1).astype(np.float32)


async def spoken(synth: SpeechSynthesizer, questions: list[str], voices: list[str]) -> list:
    return [
        (q, pcm16_to_float(await synth.synthesize(q, voice=VoiceOptions(voice=v))))
        for v in voices
        for q in questions
    ]


async def scored(
    synth: SpeechSynthesizer, asr: SpeechRecognizer, questions: list[str], voices: list[str]
) -> list[tuple[str, float, float]]:
    """(condition, WER, confidence) per question, voice and condition; missing = WER 1."""
    rng = np.random.default_rng(11)
    items = await spoken(synth, questions, voices)
    longest = max(a.size for _, a in items) + RATE
    babble = await babble_noise(synth, longest)
    out = []
    for name, snr in CONDITIONS:
        for question, audio in items:
            if snr is None:
                noisy = audio
            elif name.startswith("pink"):
                noisy = mix_at(audio, pink_noise(audio.size, rng), snr)
            else:
                start = int(rng.integers(0, longest - audio.size))
                noisy = mix_at(audio, babble[start:], snr)
            t = asr.transcribe(noisy)
            if t is None:
                out.append((name, 1.0, 0.0))
                continue
            e, n = word_errors(question, t.text)
            out.append((name, e / n, t.confidence))
    return out


def rates(rows: list[tuple[str, float, float]], threshold: float) -> tuple[float, float, int, int]:
    """False accept rate (WER > 0.5 not unsure), false reject rate (WER <= 0.2 unsure)."""
    bad = [c for _, w, c in rows if w > 0.5]
    good = [c for _, w, c in rows if w <= 0.2]
    fa = sum(c >= threshold for c in bad) / len(bad) if bad else 0.0
    fr = sum(c < threshold for c in good) / len(good) if good else 0.0
    return fa, fr, len(bad), len(good)


def choose_threshold(rows: list[tuple[str, float, float]]) -> float:
    """The threshold with the fewest false accepts + false rejects (ties: the lower)."""
    best = min(
        np.arange(0.20, 0.85, 0.025),
        key=lambda t: (
            sum(c >= t for _, w, c in rows if w > 0.5) + sum(c < t for _, w, c in rows if w <= 0.2)
        ),
    )
    return round(float(best), 3)


async def confidence_rows(
    synth: SpeechSynthesizer, asr: SpeechRecognizer
) -> tuple[float, list[list[object]]]:
    tuning = await scored(synth, asr, TUNING, TUNING_VOICES)
    chosen = choose_threshold(tuning)
    held = await scored(synth, asr, HELD_OUT, HELD_OUT_VOICES)
    used = asr.options.unsure_below
    rows: list[list[object]] = []
    for name, _ in CONDITIONS:
        part = [r for r in held if r[0] == name]
        fa, fr, n_bad, n_good = rates(part, used)
        wer = float(np.mean([w for _, w, _ in part]))
        rows.append([name, len(part), f"{wer:.2f}", n_bad, f"{fa:.2f}", n_good, f"{fr:.2f}"])
    fa, fr, n_bad, n_good = rates(held, used)
    wer = float(np.mean([w for _, w, _ in held]))
    rows.append(["all", len(held), f"{wer:.2f}", n_bad, f"{fa:.2f}", n_good, f"{fr:.2f}"])
    return chosen, rows


def old_endpoint_factory(asr: SpeechRecognizer, silence_ms: int) -> Callable[[np.ndarray], bool]:
    """The previous hands-free check (baseline): Silero over the whole utterance so far,
    every 200 ms of audio, ended by ``silence_ms`` after the last speech."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    def ended(audio: np.ndarray) -> bool:
        spans = get_speech_timestamps(
            audio,
            VadOptions(threshold=asr.options.vad_threshold, min_silence_duration_ms=200),
        )
        return bool(spans) and (audio.size - spans[-1]["end"]) / RATE * 1000 >= silence_ms

    return ended


def end_of_speech(audio: np.ndarray) -> int:
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    return int(loud[-1]) if loud.size else audio.size


async def latency_rows(
    synth: SpeechSynthesizer, configs: list[tuple[str, SpeechRecognizer]]
) -> tuple[list[list[object]], dict[str, list[float]]]:
    """End of speech -> transcript on held-out questions, audio paced in real time from
    0.3 s before the end of speech (earlier audio is fed at once), for each hands-free
    configuration and for the previous whole-utterance endpoint (baseline, with the
    first configuration's recogniser); each question in turn through every one, so
    load on the machine falls on all alike. WER of the transcripts, speculative
    decodes used and wasted."""
    items = await spoken(synth, HELD_OUT, HELD_OUT_VOICES)
    tail = bytes(2 * RATE * 3 // 2)  # 1.5 s of silence after the question
    names = [name for name, _ in configs] + [
        "whole-utterance VAD every 200 ms, endpoint 700 ms (previous baseline)"
    ]
    delays: dict[str, list[float]] = {n: [] for n in names}
    errors: dict[str, list[int]] = {n: [0, 0] for n in names}
    spec: dict[str, list[int]] = {n: [0, 0] for n in names}
    for _, asr in configs:
        asr.transcribe(items[0][1])  # warm-up
    for question, audio in items:
        pcm = float_to_pcm16(audio) + tail
        stop = end_of_speech(audio)
        for name, asr in configs:
            ms, text, used, wasted = await _paced_ours(asr, pcm, stop)
            delays[name].append(ms)
            e, n = word_errors(question, text)
            errors[name][0] += e
            errors[name][1] += n
            spec[name][0] += used
            spec[name][1] += wasted
        ms, text = await _paced_old(configs[0][1], pcm, stop)
        delays[names[-1]].append(ms)
        e, n = word_errors(question, text)
        errors[names[-1]][0] += e
        errors[names[-1]][1] += n
    rows = []
    for name in names:
        v = delays[name]
        e, n = errors[name]
        used, wasted = spec[name]
        rows.append(
            [
                name,
                len(v),
                f"{percentile(v, 0.5):.0f}",
                f"{percentile(v, 0.95):.0f}",
                f"{max(v):.0f}",
                f"{e / n:.2f}",
                f"{used}/{wasted}" if name != names[-1] else "-",
            ]
        )
    return rows, delays


async def _paced(pcm: bytes, stop: int, step: Callable[[bytes], object]) -> float | None:
    """Feed 20 ms chunks; real time from 0.3 s before ``stop``; returns the wall time at
    which the chunk holding ``stop`` was fed."""
    t_stop = None
    next_at = None
    for index, chunk in enumerate(chunks(pcm, rate=RATE, chunk_ms=20)):
        pos = index * 320
        if pos >= stop - RATE * 3 // 10:
            next_at = next_at or time.perf_counter()
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # a microphone delivers 20 ms every 20 ms
            next_at += 0.02
        if t_stop is None and pos + 320 > stop:
            t_stop = time.perf_counter()
        result = step(chunk)
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return t_stop
    return None


async def _paced_ours(asr: SpeechRecognizer, pcm: bytes, stop: int) -> tuple[float, str, int, int]:
    hands = HandsFree(asr, rate=RATE, max_ms=30_000)
    done: list[Transcript | None] = []

    async def step(chunk: bytes) -> bool:
        for event in hands.feed(chunk):
            if isinstance(event, SpeechEnded):
                done.append(await hands.transcript(event))
                return True
        return False

    t_stop = await _paced(pcm, stop, step)
    assert t_stop is not None and done
    ms = (time.perf_counter() - t_stop) * 1000
    text = done[0].text if done[0] is not None else ""
    return ms, text, hands.speculations_used, hands.speculations_wasted


async def _paced_old(asr: SpeechRecognizer, pcm: bytes, stop: int) -> tuple[float, str]:
    ended = old_endpoint_factory(asr, 700)
    parts: list[np.ndarray] = []
    size = checked = 0
    heard: list[Transcript | None] = []

    async def step(chunk: bytes) -> bool:
        nonlocal size, checked
        parts.append(pcm16_to_float(chunk))
        size += len(chunk) // 2
        if size - checked < RATE // 5:
            return False
        checked = size
        audio = np.concatenate(parts)
        if await asyncio.to_thread(ended, audio):
            heard.append(await asr.transcribe_async(audio))
            return True
        return False

    t_stop = await _paced(pcm, stop, step)
    assert t_stop is not None
    text = heard[0].text if heard and heard[0] is not None else ""
    return (time.perf_counter() - t_stop) * 1000, text


async def cpu_rows(synth: SpeechSynthesizer, asr: SpeechRecognizer) -> list[list[object]]:
    """CPU seconds per minute of hands-free audio, fed as fast as it goes (no rate cap):
    VAD alone, and VAD + transcription; old endpoint vs the streaming listener."""
    rng = np.random.default_rng(5)
    items = await spoken(synth, HELD_OUT[:8], ["gmw/en"])
    babble = await babble_noise(synth, 60 * RATE)
    quiet = (pink_noise(60 * RATE, rng) * 0.003).astype(np.float32)
    stream = quiet.copy()
    for i, (_, audio) in enumerate(items):  # a question every 7.5 s
        start = i * 7 * RATE + i * RATE // 2
        stream[start : start + audio.size] += audio
    streams: dict[str, np.ndarray] = {
        "questions in quiet": stream,
        "talk nearby (babble)": babble * 0.1,
    }
    rows: list[list[object]] = []
    for name, audio in streams.items():
        pcm = float_to_pcm16(audio)
        for decode in (False, True):
            old = _cpu(_run_old, asr, pcm, decode)
            new = _cpu(_run_new, asr, pcm, decode)
            label = "VAD + transcription" if decode else "VAD only"
            rows.append([name, label, f"{old:.2f}", f"{new:.2f}", f"{old / max(new, 1e-9):.1f}x"])
    return rows


def _cpu(
    run: Callable[[SpeechRecognizer, bytes, bool], None],
    asr: SpeechRecognizer,
    pcm: bytes,
    decode: bool,
) -> float:
    start = time.process_time()
    run(asr, pcm, decode)
    return time.process_time() - start  # audio is one minute long


def _run_old(asr: SpeechRecognizer, pcm: bytes, decode: bool) -> None:
    ended = old_endpoint_factory(asr, 700)
    parts: list[np.ndarray] = []
    size = checked = 0
    for chunk in chunks(pcm, rate=RATE, chunk_ms=20):
        parts.append(pcm16_to_float(chunk))
        size += len(chunk) // 2
        if size - checked < RATE // 5:
            continue
        checked = size
        audio = np.concatenate(parts)
        if ended(audio) or size >= 30 * RATE:
            if decode:
                asr.transcribe(audio)
            parts, size, checked = [], 0, 0


def _run_new(asr: SpeechRecognizer, pcm: bytes, decode: bool) -> None:
    options = asr.options.vad_options()
    options.max_audio_speed = float("inf")  # fed fast on purpose
    listener = HandsFreeListener(rate=RATE, max_ms=30_000, options=options)
    for chunk in chunks(pcm, rate=RATE, chunk_ms=20):
        for event in listener.feed(chunk):
            if decode and isinstance(event, (SpeechEnded, SpeechPaused)):
                if isinstance(event, SpeechEnded) and event.speculative:
                    continue  # decoded at the pause already
                asr.transcribe(event.audio)


def feed_cost_ms(asr: SpeechRecognizer, pcm: bytes) -> list[float]:
    """Wall time of each ``HandsFreeListener.feed`` of a 20 ms chunk (what the loop pays)."""
    options = asr.options.vad_options()
    options.max_audio_speed = float("inf")
    listener = HandsFreeListener(rate=48_000, max_ms=30_000, options=options)
    samples = np.interp(
        np.arange(len(pcm) // 2 * 3) / 3, np.arange(len(pcm) // 2), pcm16_to_float(pcm)
    )
    pcm48 = float_to_pcm16(samples.astype(np.float32))
    costs = []
    for chunk in chunks(pcm48, rate=48_000, chunk_ms=20):
        t0 = time.perf_counter()
        listener.feed(chunk)
        costs.append((time.perf_counter() - t0) * 1000)
    return costs
