"""Speech out and in on this machine: time to first audio, real-time factors, end-of-speech delay.

    python benchmarks/speech_bench.py [--repeat 5]

TTS: pyttsx3/espeak-ng streamed sentence by sentence from the supervised
espeak-ng process (ours) vs the naive path, the espeak-ng command synthesising
the whole text before anything is sent (baseline, same run), and vs the
previous design, espeak-ng in this process (first sentence synthesised here).
ASR: a spoken question (espeak-ng) streamed in 20 ms chunks; the delay is from
the end of the audio (audio-stop) to the transcript; with VAD (ours: gate, crop
to speech) and without (baseline: Whisper on the raw utterance), for each model
that is available offline.
Listening (``speech_listening.py``, tiny.en): confidence false accept / reject on
held-out questions in noise, for the 30 s encoder (before) and the 10 s window
(``AsrOptions.context_s``, ours); hands-free end of speech -> transcript with
WER (streaming VAD with a speculative decode, both encoders, vs the previous
whole-utterance VAD, same run);
CPU per minute of hands-free audio; the event loop's cost per 20 ms chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import speech_listening as listening
from benchmarks.common import machine, markdown_table, percentile, write_json
from speech.asr import RATE, AsrOptions, SpeechRecognizer, Utterance
from speech.audio import chunks, float_to_pcm16, pcm16_to_float, resample
from speech.tts import ESPEAK_RATE, SpeechSynthesizer, _init_espeak, split_sentences
from speech.wer import word_errors

SHORT = "Chair, one metre, slightly left."
LONG = (
    "You are in a wide corridor with doors on both sides. The sign ahead says Platform two. "
    "A bench stands against the right wall about three metres away, and a bicycle leans on "
    "the wall to the left. The floor is clear in front of you."
)
QUESTION = "Could you tell me whether the door in front of me is open or closed?"
MODELS = ["tiny.en", "base.en", "small"]


class InProcessEspeak:
    """The previous design's first step, for comparison: espeak-ng in this process,
    the first sentence synthesised, resampled and cut into the first 100 ms chunk."""

    def __init__(self) -> None:
        self.espeak, _ = _init_espeak()
        self.buf: list[bytes] = []

        def on_audio(wav: object, numsamples: int, events: object) -> int:
            if numsamples > 0:
                self.buf.append(ctypes.string_at(wav, numsamples * 2))  # type: ignore[arg-type]
            return 0

        self._callback = on_audio  # kept alive: espeak-ng holds only a C pointer
        self.espeak.SetSynthCallback(on_audio)

    def first_chunk_s(self, text: str, rate: int) -> float:
        t0 = time.perf_counter()
        self.buf = []
        first = split_sentences(text)[0]
        self.espeak.Synth(first.encode(), flags=self.espeak.ENDPAUSE | self.espeak.CHARS_UTF8)
        self.espeak.Synchronize()
        pcm = float_to_pcm16(resample(pcm16_to_float(b"".join(self.buf)), ESPEAK_RATE, rate))
        assert pcm[: rate // 10 * 2]
        return time.perf_counter() - t0


async def tts_rows(repeat: int) -> list[list[object]]:
    synth = SpeechSynthesizer()
    synth.load()
    await synth.synthesize("warm up")
    local = InProcessEspeak()
    local.first_chunk_s("warm up.", synth.options.rate)
    rows: list[list[object]] = []
    for name, text in (("short warning", SHORT), ("long description", LONG)):
        firsts, totals, audio_s, cli, inproc = [], [], 0.0, [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            first = None
            size = 0
            async for chunk in synth.stream(text):
                first = first or time.perf_counter() - t0
                size += len(chunk)
            totals.append(time.perf_counter() - t0)
            firsts.append(first or 0.0)
            audio_s = size / 2 / synth.options.rate
            inproc.append(local.first_chunk_s(text, synth.options.rate))
            t1 = time.perf_counter()
            subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True)
            cli.append(time.perf_counter() - t1)
        med = statistics.median
        rows.append(
            [
                name,
                f"{audio_s:.2f}",
                f"{med(firsts) * 1000:.1f}",
                f"{med(inproc) * 1000:.1f}",
                f"{med(totals) / audio_s:.3f}",
                f"{med(cli) * 1000:.1f}",
                f"{med(cli) / med(firsts):.1f}x",
            ]
        )
    return rows


async def asr_rows(repeat: int) -> list[list[object]]:
    synth = SpeechSynthesizer()
    synth.load()
    pcm = await synth.synthesize(QUESTION)
    rows: list[list[object]] = []
    for model in MODELS:
        recognizer = SpeechRecognizer(AsrOptions(model=model, device="cpu"))
        try:
            recognizer.load()
        except Exception as exc:
            rows.append([model, "not available offline", "-", "-", "-", type(exc).__name__])
            continue
        utterance = Utterance(rate=RATE, max_ms=30_000)
        for chunk in chunks(pcm, rate=RATE, chunk_ms=20):
            utterance.feed(chunk)
        audio = utterance.samples()
        recognizer.transcribe(audio)  # warm-up
        ours, raw, text_ours, text_raw = [], [], "", ""
        for _ in range(repeat):
            t0 = time.perf_counter()
            transcript = recognizer.transcribe(audio)
            ours.append(time.perf_counter() - t0)
            text_ours = transcript.text if transcript else ""
            t1 = time.perf_counter()
            segments, _ = recognizer._model.transcribe(
                audio,
                language="en",
                beam_size=1,
                vad_filter=False,
                condition_on_previous_text=False,
                without_timestamps=True,
                temperature=0.0,
            )
            text_raw = " ".join(s.text for s in segments).strip()
            raw.append(time.perf_counter() - t1)
        audio_s = audio.size / RATE
        med = statistics.median
        for label, times, text in (
            ("VAD gate + crop (ours)", ours, text_ours),
            ("no VAD (baseline)", raw, text_raw),
        ):
            e, n = word_errors(QUESTION, text)
            rows.append(
                [
                    model,
                    label,
                    f"{audio_s:.2f}",
                    f"{med(times) * 1000:.0f}",
                    f"{med(times) / audio_s:.3f}",
                    f"{e / n:.2f}  '{text}'",
                ]
            )
        recognizer.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    tts = asyncio.run(tts_rows(args.repeat))
    print("\n### Text-to-speech (pyttsx3 + espeak-ng, 16 kHz PCM16 chunks of 100 ms)\n")
    print(
        markdown_table(
            [
                "text",
                "audio s",
                "first chunk ms (target < 150 short)",
                "in-process espeak-ng first chunk ms (previous design)",
                "real-time factor",
                "espeak-ng CLI whole text ms (baseline)",
                "baseline / ours to first audio",
            ],
            tts,
        )
    )
    asr = asyncio.run(asr_rows(args.repeat))
    print(
        "\n### Speech-to-text: end of speech to transcript "
        f"(question: '{QUESTION}', espeak-ng, streamed in 20 ms chunks)\n"
    )
    print(
        markdown_table(
            [
                "model",
                "pipeline",
                "audio s",
                "delay ms (target < 600 tiny.en)",
                "real-time factor",
                "WER and text",
            ],
            asr,
        )
    )
    listen = asyncio.run(listening_tables())
    write_json("speech", {"machine": machine(), "tts": tts, "asr": asr, **listen})


async def listening_tables() -> dict[str, object]:
    synth = SpeechSynthesizer()
    synth.load()
    before = SpeechRecognizer(
        AsrOptions(model="tiny.en", device="cpu", context_s=None, speculate_pause_ms=200)
    )
    asr = SpeechRecognizer(AsrOptions(model="tiny.en", device="cpu"))
    later = SpeechRecognizer(AsrOptions(model="tiny.en", device="cpu", speculate_pause_ms=200))
    for recognizer in (before, asr, later):
        recognizer.load()
    conf: list[list[object]] = []
    chosen: dict[str, float] = {}
    for label, recognizer in (("30 s encoder (before)", before), ("10 s window (ours)", asr)):
        picked, rows = await listening.confidence_rows(synth, recognizer)
        chosen[label] = picked
        conf.extend([[label, *row] for row in rows])
    print(
        f"\n### Misheard questions: unsure below {asr.options.unsure_below} "
        f"(threshold chosen on tuning questions this run: {chosen})\n"
    )
    print(
        markdown_table(
            [
                "encoder",
                "held-out questions",
                "n",
                "WER",
                "misheard (WER > 0.5)",
                "false accept",
                "heard well (WER <= 0.2)",
                "false reject",
            ],
            conf,
        )
    )
    load = os.getloadavg()[0]
    latency, raw = await listening.latency_rows(
        synth,
        [
            ("streaming VAD, 30 s encoder, decode at 200 ms pause (before)", before),
            ("streaming VAD, 10 s window, decode at 200 ms pause", later),
            ("streaming VAD, 10 s window, decode at 120 ms pause (ours)", asr),
        ],
    )
    print(
        "\n### Hands-free: end of speech -> transcript (held-out questions, real-time tail; "
        f"load average {load:.2f} -> {os.getloadavg()[0]:.2f})\n"
    )
    print(
        markdown_table(
            [
                "end of speech",
                "n",
                "p50 ms",
                "p95 ms (target < 700)",
                "max ms",
                "WER",
                "early decodes used/wasted",
            ],
            latency,
        )
    )
    cpu = await listening.cpu_rows(synth, asr)
    print("\n### Hands-free CPU seconds per minute of audio (fed as fast as it goes)\n")
    print(
        markdown_table(
            ["audio", "work", "previous endpoint (baseline)", "streaming VAD (ours)", "ratio"], cpu
        )
    )
    pcm = await synth.synthesize(listening.HELD_OUT[0])
    costs = listening.feed_cost_ms(asr, pcm + bytes(32_000))
    print(
        f"\nEvent-loop cost of HandsFreeListener.feed per 20 ms chunk at 48 kHz: p50 "
        f"{percentile(costs, 0.5):.3f} ms, p99 {percentile(costs, 0.99):.3f} ms, "
        f"max {max(costs):.3f} ms ({len(costs)} chunks)"
    )
    for recognizer in (before, asr, later):
        recognizer.close()
    return {"threshold_chosen": chosen, "confidence": conf, "latency": raw, "cpu": cpu}


if __name__ == "__main__":
    main()
