"""Many phones against one server: how many this machine holds, and whether one bad
client (a `/metrics` poller, a client that stops reading) takes time from the others.

N phones stream real footage (640x480 JPEG, 10 fps) and ask a spoken question every
``--ask-every`` seconds (espeak-ng speech through the real recogniser); the server
runs in its own process with the real speech models and a scripted vision double
that holds one model thread ``--model-ms`` per call (a GPU does one call at a
time). For each N: sessions held, frames received / analysed / dropped, frame ->
first speech p50/p95, ingest p95, the longest gap between two looks at a session
(starvation, in heartbeats), RSS and open files at start and end. The largest N
that keeps ingest p95 under 5 ms and no session without a look for more than 3
heartbeats is reported; then the same load at half that N with `/metrics` polled
by 16 clients and with one stuck client, and a soak at half that N.

Baseline in the same run: the same N=1 session alone (its frame -> speech and
ingest figures are what "unloaded" means here).

    python benchmarks/load.py [--steps 2,4,8,12] [--seconds 20] [--soak 600]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing as mp
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import ClientConnection, connect

import protocol as p
from benchmarks.common import SHARED_DATA, machine, markdown_table, percentile, write_json
from server.analysis import AnalysisRequest

HEARTBEAT_S = 10.0


class HazardModelDouble:
    """Test double for the model: one thread, ``seconds`` a call, a chair every time."""

    name = "hazard-model-double"

    def __init__(self, seconds: float) -> None:
        from runtime import Worker

        self.seconds = seconds
        self.worker = Worker("model-double", max_pending=64)

    async def analyze(self, request: AnalysisRequest) -> p.ObservationMsg | None:
        await self.worker.submit(lambda: time.sleep(self.seconds))  # model time, not sync
        return p.ObservationMsg(
            frame_seq=request.frame.frame.seq,
            reason=request.reason,
            hazards=[p.HazardInfo(label="chair", direction="ahead", distance_m=2.0)],
            answer="A chair ahead." if request.question else None,
        )


def _serve(db: str, pipe: Any, model_s: float) -> None:
    """The server process: real speech, the model double; answers snapshot requests."""
    import os
    import threading

    import psutil

    from server.app import SeeAloudServer
    from server.auth import UserStore
    from server.config import ServerConfig
    from server.db import connect
    from speech.asr import AsrOptions, SpeechRecognizer
    from speech.tts import SpeechSynthesizer

    async def main() -> None:
        cfg = ServerConfig(
            host="127.0.0.1",
            port=0,
            db_path=Path(db),
            max_sessions_per_account=4,
            max_sessions_per_address=10_000,
        )
        server = SeeAloudServer(
            cfg,
            store=UserStore(connect(db)),
            analyzer=HazardModelDouble(model_s),
            tts=SpeechSynthesizer(),
            asr=SpeechRecognizer(AsrOptions(model="tiny.en", device="cpu")),
        )
        await server.start()
        for loader in (server.tts, server.asr):
            assert loader is not None
            await loader.loaded.wait()
        loop = asyncio.get_running_loop()
        proc = psutil.Process(os.getpid())

        def answer() -> None:
            while True:
                request = pipe.recv()
                if request == "stop":
                    return
                snap = server.metrics.snapshot()
                snap["rss_mb"] = proc.memory_info().rss / 2**20
                snap["fds"] = proc.num_fds()
                snap["sessions"] = len(server.sessions)
                pipe.send(snap)

        pipe.send(server.port)
        await loop.run_in_executor(None, answer)

    threading.current_thread().name = "bench-server"
    asyncio.run(main())


@dataclass
class PhoneStats:
    frames_sent: int = 0
    observations: int = 0
    speech_after_frame: list[float] = field(default_factory=list)
    look_times: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    closed: str = ""


async def phone(
    url: str,
    token: str,
    frames: list[bytes],
    question: bytes,
    args: argparse.Namespace,
    offset: int,
) -> PhoneStats:
    stats = PhoneStats()
    sent_at: dict[int, float] = {}
    last_obs_seq: list[int] = []
    async with connect(url, max_size=None) as ws:
        await ws.send(p.encode(p.Hello(protocol=1, token=token)))
        ready = p.decode(await ws.recv())
        assert isinstance(ready, p.Ready), ready

        async def read() -> None:
            async for raw in ws:
                msg = p.decode(raw)
                now = time.monotonic()
                if isinstance(msg, p.ObservationMsg):
                    stats.observations += 1
                    stats.look_times.append(now)
                    if msg.frame_seq is not None:
                        last_obs_seq.append(msg.frame_seq)
                elif isinstance(msg, p.SpeechStart) and msg.priority == "hazard" and last_obs_seq:
                    sent = sent_at.get(last_obs_seq[-1])
                    if sent is not None:
                        stats.speech_after_frame.append((now - sent) * 1000)
                elif isinstance(msg, p.Error):
                    stats.errors[msg.code] = stats.errors.get(msg.code, 0) + 1

        reader = asyncio.create_task(read())
        asking: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        next_question = start + args.ask_every * (0.3 + 0.7 * (offset % 7) / 7)
        n = 0
        while (due := start + n / args.fps) < start + args.seconds:
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)  # pacing to the camera's rate
            jpeg = frames[(offset + n) % len(frames)]
            sent_at[n] = time.monotonic()
            await ws.send(
                p.encode(
                    p.CameraFrame(
                        seq=n, ts=int(time.time() * 1000), width=640, height=480, payload=jpeg
                    )
                )
            )
            stats.frames_sent += 1
            if time.monotonic() >= next_question:
                next_question += args.ask_every
                task = asyncio.create_task(_ask(ws, question))
                asking.add(task)
                task.add_done_callback(asking.discard)
            n += 1
        await ws.send(p.encode(p.Bye()))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader, 5)
    return stats


async def _ask(ws: ClientConnection, pcm: bytes) -> None:
    """A spoken question at the microphone's pace (20 ms chunks)."""
    with contextlib.suppress(Exception):
        await ws.send(p.encode(p.AudioStart(rate=16000)))
        for n, off in enumerate(range(0, len(pcm), 640)):
            await ws.send(p.encode(p.AudioChunk(seq=n, ts=n * 20, payload=pcm[off : off + 640])))
            await asyncio.sleep(0.02)  # pacing to the microphone's rate
        await ws.send(p.encode(p.AudioStop()))


async def metrics_poller(url: str, until: float) -> int:
    polls = 0
    while time.monotonic() < until:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
            polls += 1
    return polls


async def stuck_client(url: str, token: str, frames: list[bytes], seconds: float) -> str:
    """Sends frames and a question, never reads: the server must close it, not wait."""
    ws = await connect(url, max_size=None, max_queue=1)
    ws.transport.pause_reading()  # stop reading at the socket
    await ws.send(p.encode(p.Hello(protocol=1, token=token)))
    start = time.monotonic()
    try:
        n = 0
        while time.monotonic() - start < seconds:
            await asyncio.wait_for(
                ws.send(
                    p.encode(
                        p.CameraFrame(
                            seq=n, ts=n, width=640, height=480, payload=frames[n % len(frames)]
                        )
                    )
                ),
                5,
            )
            await ws.send(p.encode(p.Question(text="what is ahead?")))
            n += 1
            await asyncio.sleep(0.1)  # pacing to the camera's rate
        return f"still open after {seconds:.0f} s"
    except Exception as exc:
        return f"closed by the server after {time.monotonic() - start:.1f} s ({type(exc).__name__})"


def load_frames(count: int) -> list[bytes]:
    from seealoud_client.frames import encode_jpeg, iter_images

    video = SHARED_DATA / "video" / "vtest.avi"
    if not video.exists():
        sys.exit(f"needs {video} (the shared benchmark data)")
    images = list(itertools.islice(iter_images(video), count))
    return [encode_jpeg(img, size=(640, 480), quality=80).jpeg for img in images]


def question_pcm() -> bytes:
    from speech.tts import SpeechSynthesizer

    tts = SpeechSynthesizer()
    tts.load()
    return asyncio.run(tts.synthesize("What is in front of me?")) + bytes(16000)


def run_step(
    n: int, args: argparse.Namespace, frames: list[bytes], question: bytes, *, extra: str = ""
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    db = str(Path(tempfile.mkdtemp()) / "load.db")
    from server.auth import UserStore
    from server.db import connect

    store = UserStore(connect(db))
    tokens = [store.add(f"user{i}") for i in range(n + 1)]
    proc = ctx.Process(target=_serve, args=(db, there, args.model_ms / 1000), daemon=True)
    proc.start()
    port = here.recv()
    url = f"ws://127.0.0.1:{port}/ws"

    def snapshot() -> dict[str, Any]:
        here.send("snap")
        return dict(here.recv())

    before = snapshot()

    async def drive() -> tuple[list[PhoneStats], str]:
        until = time.monotonic() + args.seconds
        jobs: list[Any] = [
            phone(url, t, frames, question, args, i * 13) for i, t in enumerate(tokens[:n])
        ]
        side: list[Any] = []
        if extra == "metrics":
            side = [metrics_poller(f"http://127.0.0.1:{port}/metrics", until) for _ in range(16)]
        elif extra == "stuck":
            # Long enough to see it closed: ping interval + ping timeout is 40 s.
            side = [stuck_client(url, tokens[n], frames, max(args.seconds, 60.0))]
        results = await asyncio.gather(*jobs, *side)
        note = ""
        if extra == "metrics":
            note = f"{sum(results[n:])} /metrics polls"
        elif extra == "stuck":
            note = str(results[n])
        return list(results[:n]), note

    phones, note = asyncio.run(drive())
    after = snapshot()
    here.send("stop")
    proc.terminate()
    proc.join(5)
    speech = [v for s in phones for v in s.speech_after_frame]
    gaps = [
        max(b - a for a, b in itertools.pairwise([0.0, *s.look_times]) if a)
        if len(s.look_times) > 1
        else args.seconds
        for s in phones
    ]
    ingest = after["ingest"]
    return {
        "n": n,
        "extra": extra or "-",
        "held": sum(1 for s in phones if s.frames_sent),
        "frames_sent": sum(s.frames_sent for s in phones),
        "received": after["frames_received"],
        "analysed": after["analyses"],
        "dropped": after["frames_dropped"] + after["model_frames_dropped"],
        "speech_p50": percentile(speech, 0.5),
        "speech_p95": percentile(speech, 0.95),
        "ingest_p95_ms": ingest.get("p95_ms"),
        "max_gap_heartbeats": max(gaps) / HEARTBEAT_S if gaps else float("nan"),
        "rss_mb": (before["rss_mb"], after["rss_mb"]),
        "fds": (before["fds"], after["fds"]),
        "errors": {k: v for s in phones for k, v in s.errors.items()},
        "note": note,
    }


def row(r: dict[str, Any]) -> list[Any]:
    return [
        r["n"],
        r["extra"],
        r["held"],
        r["frames_sent"],
        r["received"],
        r["analysed"],
        r["dropped"],
        r["speech_p50"],
        r["speech_p95"],
        r["ingest_p95_ms"],
        round(r["max_gap_heartbeats"], 2),
        f"{r['rss_mb'][0]:.0f} -> {r['rss_mb'][1]:.0f}",
        f"{r['fds'][0]} -> {r['fds'][1]}",
        r["note"],
    ]


HEADERS = [
    "phones",
    "also",
    "held",
    "frames sent",
    "received",
    "analysed",
    "dropped",
    "frame->speech p50 ms",
    "p95 ms",
    "ingest p95 ms",
    "longest gap (heartbeats)",
    "RSS MiB",
    "fds",
    "note",
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="1,2,4,8,12")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--ask-every", type=float, default=10.0)
    ap.add_argument("--model-ms", type=float, default=200.0)
    ap.add_argument("--soak", type=float, default=0.0, help="seconds of soak at half the best N")
    args = ap.parse_args()
    frames = load_frames(120)
    question = question_pcm()
    print(f"machine: {machine()}")
    results = []
    best = 0
    for n in (int(x) for x in args.steps.split(",")):
        r = run_step(n, args, frames, question)
        results.append(r)
        print(markdown_table(HEADERS, [row(r)]), flush=True)
        ok = (r["ingest_p95_ms"] or 0) < 5 and r["max_gap_heartbeats"] <= 3 and r["held"] == n
        if not ok:
            break
        best = n
    half = max(1, best // 2)
    for extra in ("metrics", "stuck"):
        r = run_step(half, args, frames, question, extra=extra)
        results.append(r)
    if args.soak:
        soak_args = argparse.Namespace(**{**vars(args), "seconds": args.soak})
        results.append(run_step(half, soak_args, frames, question, extra="soak"))
    print(f"\nmachine: {machine()}; model double {args.model_ms:.0f} ms/call; real speech models")
    print(markdown_table(HEADERS, [row(r) for r in results]))
    print(f"\nlargest N held (ingest p95 < 5 ms, none unlooked-at > 3 heartbeats): {best}")
    write_json("load", {"machine": machine(), "args": vars(args), "results": results, "best": best})


if __name__ == "__main__":
    main()
