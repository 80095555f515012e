"""The whole path with the real tiny models: a replayed clip and a spoken question produce
a transcript, an analysis by a (tiny, random-weight) Qwen3-VL and speech audio back."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import protocol as p
from seealoud_client.frames import EncodedFrame, encode_jpeg, iter_images
from seealoud_client.replay import ReplayClient
from server.analysis import build_engine
from server.config import ServerConfig
from speech.asr import SpeechRecognizer
from speech.tts import SpeechSynthesizer
from speech.wer import word_errors
from tests.conftest import SHARED_DATA, Accounts, ServerFactory, ws_url

QUESTION = "Is the door open?"


def clip() -> list[EncodedFrame]:
    video = SHARED_DATA / "video" / "vtest.avi"
    if video.exists():
        images = [img for _, img in zip(range(20), iter_images(video), strict=False)]
    else:  # a user's clone without the shared data: a generated clip
        from PIL import Image

        images = [Image.new("RGB", (640, 480), (20 * i, 90, 160)) for i in range(20)]
    return [encode_jpeg(img, size=(640, 480), quality=80) for img in images]


async def test_replayed_clip_and_spoken_question(
    make_server: ServerFactory,
    accounts: Accounts,
    tiny_vlm: Path,
    tmp_path: Path,
    tts_model: SpeechSynthesizer,
    asr_model: SpeechRecognizer,
) -> None:
    engine = build_engine(
        ServerConfig(model=str(tiny_vlm), device="cpu", vlm_max_new_tokens=8, vlm_deadline_s=30)
    )
    server = await make_server(engine=engine, tts=tts_model, asr=asr_model)
    assert engine is not None
    assert server.vision is not None
    await asyncio.wait_for(server.vision.loaded.wait(), 120)
    wav_path = tmp_path / "question.wav"
    pcm = await tts_model.synthesize(QUESTION)
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16_000)
        wav.writeframes(bytes(6400) + pcm + bytes(6400))

    client = ReplayClient(ws_url(server), accounts.user_token)
    ready = await client.connect()
    assert ready.capabilities.vision and ready.capabilities.speech_in
    assert ready.capabilities.speech_out
    answered = asyncio.Event()

    def on_message(item: object) -> None:
        msg = getattr(item, "message", None)
        if isinstance(msg, p.SpeechStop) and any(
            isinstance(m, p.SpeechStart) and m.priority == "answer" and m.utterance == msg.utterance
            for m in client.stats.of_type(p.SpeechStart)
        ):
            answered.set()

    client.on_message = on_message
    streaming = asyncio.create_task(client.stream(clip(), fps=10))
    await client.send_wav(wav_path)
    await asyncio.wait_for(answered.wait(), 60)
    await streaming
    await client.close()

    transcripts = [
        m for m in client.stats.of_type(p.TranscriptMsg) if isinstance(m, p.TranscriptMsg)
    ]
    assert transcripts, "no transcript"
    errors, words = word_errors(QUESTION, transcripts[0].text)
    assert errors / words <= 0.5, transcripts[0].text
    analyses = [
        o
        for o in client.stats.of_type(p.ObservationMsg)
        if isinstance(o, p.ObservationMsg) and o.reason == "question"
    ]
    assert analyses and analyses[0].latency_ms
    starts = [
        s
        for s in client.stats.of_type(p.SpeechStart)
        if isinstance(s, p.SpeechStart) and s.priority == "answer"
    ]
    audio = [
        c.payload
        for c in client.stats.of_type(p.SpeechChunk)
        if isinstance(c, p.SpeechChunk) and c.utterance == starts[0].utterance
    ]
    assert sum(len(a) for a in audio) > 16_000  # more than half a second of speech
