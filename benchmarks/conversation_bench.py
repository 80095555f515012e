"""Server-side latency of the conversation: frame to first speech, interrupt, hazard barge-in.

    python benchmarks/conversation_bench.py [--trials 40]

A real server on loopback with real espeak-ng speech and the real change
detector; the vision model is a test double that takes a fixed time (so it can
be subtracted) and reports a new hazard for every frame it sees. Measured
inside the server, with its own monotonic clock:

1. frame arrival -> first speech chunk sent, minus model time (the server's own
   overhead: detector, queues, narrator, synthesis of the first sentence);
2. interrupt received -> speech stopped (the last message of the cut
   utterance sent), while a long description plays; the client's view
   (interrupt sent -> speech-stop received) is shown too;
3. hazard observation ready -> its first chunk sent, while a description plays.

Baseline in the same run: espeak-ng's own time to first chunk for the same
warning text, outside the server.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image
from websockets.asyncio.client import connect

import protocol as p
from benchmarks.common import machine, markdown_table, percentile, write_json
from server.analysis import AnalysisRequest
from server.app import SeeAloudServer
from server.auth import UserStore
from server.config import ServerConfig
from server.db import connect as db_connect
from speech.tts import SpeechSynthesizer


def long_description(k: int) -> str:
    """About 30 s of speech, different enough each time not to be deduplicated."""
    return " ".join(f"Shop number {k * 100 + n} is open." for n in range(15))


class TimedVisionDouble:
    """Test double for the model: fixed latency, a new hazard (or a description) per call."""

    name = "timed-double"

    def __init__(self, model_s: float) -> None:
        self.model_s = model_s
        self.next_scene: str | None = None
        self.done_at: dict[int, float] = {}
        self.calls = 0

    async def analyze(self, request: AnalysisRequest) -> p.ObservationMsg | None:
        await asyncio.sleep(self.model_s)  # simulated model time
        self.calls += 1
        seq = request.frame.frame.seq
        self.done_at[seq] = time.monotonic()
        if self.next_scene is not None:
            scene, self.next_scene = self.next_scene, None
            return p.ObservationMsg(frame_seq=seq, scene=scene)
        return p.ObservationMsg(
            frame_seq=seq,
            hazards=[
                p.HazardInfo(
                    label=f"obstacle {seq}", direction="ahead", distance_m=1.0, urgency="high"
                )
            ],
        )


def jpeg(shade: int) -> bytes:
    """A new view for every ``shade``: a flat frame would be "nothing to see" (the
    detector never sends a featureless frame on), so each carries its own texture."""
    rng = np.random.default_rng(shade)
    tint = np.array([shade, 255 - shade, (shade * 7) % 255], dtype=np.float32)
    blocks = rng.integers(0, 255, size=(12, 16, 1)).astype(np.float32)
    pixels = np.kron(blocks, np.ones((40, 40, 1), dtype=np.float32)) * 0.5 + tint * 0.5
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buf, format="JPEG", quality=80)
    return buf.getvalue()


async def run(trials: int, model_ms: float) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp())
    store = UserStore(db_connect(tmp / "bench.db"))
    token = store.add("walker")
    vision = TimedVisionDouble(model_ms / 1000)
    tts = SpeechSynthesizer()
    server = SeeAloudServer(
        ServerConfig(host="127.0.0.1", port=0, db_path=tmp / "bench.db"),
        store=store,
        analyzer=vision,
        tts=tts,
    )
    await server.start()
    assert server.tts is not None
    await server.tts.loaded.wait()
    await server.settings_store_update("walker", {"verbosity": "detailed"})
    ws = await connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None)
    await ws.send(p.encode(p.Hello(protocol=1, token=token)))
    await ws.recv()
    session = server.user_session("walker")
    inbox: asyncio.Queue[tuple[float, p.Message]] = asyncio.Queue()

    async def reader() -> None:
        async for raw in ws:
            await inbox.put((time.monotonic(), p.decode(raw)))

    reading = asyncio.create_task(reader())

    async def until(
        pred: Callable[[p.Message], bool], timeout: float = 10.0
    ) -> tuple[float, p.Message]:
        while True:
            at, msg = await asyncio.wait_for(inbox.get(), timeout)
            if pred(msg):
                return at, msg

    async def started(kind: str) -> p.SpeechStart:
        _, msg = await until(lambda m: isinstance(m, p.SpeechStart) and m.priority == kind)
        assert isinstance(msg, p.SpeechStart)
        return msg

    async def stopped(utterance: str) -> float:
        at, _ = await until(lambda m: isinstance(m, p.SpeechStop) and m.utterance == utterance)
        return at

    seq = 0

    async def send_frame() -> int:
        nonlocal seq
        seq += 1
        shade = (seq * 97) % 256  # every frame is a new view: the detector fires
        await ws.send(
            p.encode(
                p.CameraFrame(
                    seq=seq, ts=int(time.time() * 1000), width=640, height=480, payload=jpeg(shade)
                )
            )
        )
        return seq

    overhead: list[float] = []
    interrupt_server: list[float] = []
    interrupt_client: list[float] = []
    barge_in: list[float] = []
    for _ in range(trials):
        # 1. frame -> first chunk of its warning, minus model time
        frame_seq = await send_frame()
        start = await started("hazard")
        await stopped(start.utterance)
        latest = session.media.slot.latest  # the one frame sent: the warning's frame
        assert latest is not None and latest.frame.seq == frame_seq
        assert frame_seq in vision.done_at
        overhead.append(
            (session.speaker.first_chunk_at[start.utterance] - latest.received_at - vision.model_s)
            * 1000
        )

        # 2. interrupt while a long description plays
        await asyncio.sleep(0.6)  # past the detector's cooldown
        vision.next_scene = long_description(2 * seq)
        await send_frame()
        scene = await started("scene")
        await until(lambda m: isinstance(m, p.SpeechChunk))
        sent = time.monotonic()
        await ws.send(p.encode(p.Interrupt()))
        stop_at = await stopped(scene.utterance)
        interrupt_client.append((stop_at - sent) * 1000)
        interrupt_server.append((session.speaker.stopped_at[scene.utterance] - sent) * 1000)

        # 3. a hazard arrives while a description plays
        await asyncio.sleep(0.6)
        vision.next_scene = long_description(2 * seq + 1)
        await send_frame()
        await started("scene")
        await until(lambda m: isinstance(m, p.SpeechChunk))
        await asyncio.sleep(0.6)
        hazard_seq = await send_frame()
        hazard = await started("hazard")
        await stopped(hazard.utterance)
        ready_at = vision.done_at[hazard_seq]
        barge_in.append((session.speaker.first_chunk_at[hazard.utterance] - ready_at) * 1000)
        await asyncio.sleep(0.6)

    baseline = []
    for _ in range(trials):
        t0 = time.monotonic()
        async for _chunk in tts.stream("Obstacle 12, one metre, ahead."):
            baseline.append((time.monotonic() - t0) * 1000)
            break
    reading.cancel()
    await ws.close()
    await server.close()
    return {
        "overhead": overhead,
        "interrupt_server": interrupt_server,
        "interrupt_client": interrupt_client,
        "barge_in": barge_in,
        "tts_alone": baseline,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--model-ms", type=float, default=200.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{args.trials} trials each; model double {args.model_ms:g} ms per call (subtracted)")
    r = asyncio.run(run(args.trials, args.model_ms))
    rows = [
        [
            "frame arrival -> first speech chunk sent, minus model time (target p95 < 60)",
            *_stats(r["overhead"]),
        ],
        [
            "interrupt sent -> speech stopped, server side (target < 50)",
            *_stats(r["interrupt_server"]),
        ],
        ["interrupt sent -> speech-stop received, client side", *_stats(r["interrupt_client"])],
        [
            "hazard observation ready -> its first chunk, while a description plays",
            *_stats(r["barge_in"]),
        ],
        ["baseline: espeak-ng first chunk of the warning alone", *_stats(r["tts_alone"])],
    ]
    print()
    print(markdown_table(["measure", "p50 ms", "p95 ms", "max ms"], rows))
    write_json("conversation", {"machine": machine(), "args": vars(args), "results": r})


def _stats(values: list[float]) -> list[str]:
    return [
        f"{percentile(values, 0.5):.1f}",
        f"{percentile(values, 0.95):.1f}",
        f"{max(values):.1f}",
    ]


if __name__ == "__main__":
    main()
