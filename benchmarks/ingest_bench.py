"""Loopback load on the server core: hello->ready and frame-ingest cost.

20 replay clients stream 640x480 JPEG at 10 fps for 30 s each to a server in
its own process; every client also pings once a second, so a backed-up socket
would show as growing ping round trips. The model is a test double that keeps
the model worker busy for 300 ms per call (as a GPU would), so the
newest-frame-wins slot is exercised under load.

Baseline, in the same run: a bare websockets server on the same settings that
receives and discards every message (no decode, validation or slot). The
difference is what SeeAloud's own ingest path costs.

    python benchmarks/ingest_bench.py [--clients 20] [--fps 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, machine, markdown_table, percentile, write_json
from protocol import ObservationMsg, Ping, Pong, encode
from seealoud_client.frames import EncodedFrame, encode_jpeg, iter_images
from seealoud_client.replay import ReplayClient
from server.analysis import AnalysisRequest


class ModelTimeDouble:
    """Test double for the model: holds one worker thread busy ``seconds`` per call."""

    name = "model-time-double"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def analyze(self, request: AnalysisRequest) -> ObservationMsg | None:
        await asyncio.get_running_loop().run_in_executor(self._worker, time.sleep, self.seconds)
        return ObservationMsg(frame_seq=request.frame.frame.seq, reason=request.reason)


def _run_seealoud(db: str, port_q: Any, model_s: float, snap_q: Any) -> None:
    from server.app import SeeAloudServer
    from server.auth import UserStore
    from server.config import ServerConfig
    from server.db import connect

    async def main() -> None:
        cfg = ServerConfig(host="127.0.0.1", port=0, db_path=Path(db))
        server = SeeAloudServer(
            cfg, store=UserStore(connect(db)), analyzer=ModelTimeDouble(model_s)
        )
        await server.start()
        port_q.put(server.port)
        # The counters and ingest percentiles, on request (the /metrics page has
        # histograms, not the exact percentiles this table shows).
        while True:
            await asyncio.to_thread(snap_q.get)
            port_q.put(server.metrics.snapshot())

    asyncio.run(main())


def _run_baseline(port_q: Any) -> None:
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    from protocol import Capabilities, Limits, Ready

    ready = encode(
        Ready(
            protocol=1,
            session="b",
            resume="b",
            user="u",
            role="user",
            capabilities=Capabilities(),
            limits=Limits(
                max_frame_bytes=1_000_000,
                max_message_bytes=4_000_000,
                max_text_bytes=65536,
                audio_rate=16000,
                max_audio_ms=30000,
                frame_age_budget_ms=1500,
            ),
        )
    )

    async def discard(ws: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await _discard(ws)

    async def _discard(ws: Any) -> None:
        async for raw in ws:
            if isinstance(raw, str):
                msg = json.loads(raw)
                if msg.get("type") == "hello":
                    await ws.send(ready)
                elif msg.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong", "data": msg.get("data", {})}))

    async def main() -> None:
        server = await serve(
            discard, "127.0.0.1", 0, compression=None, max_size=4_000_000, max_queue=4
        )
        port_q.put(next(iter(server.sockets)).getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def load_frames(count: int) -> list[EncodedFrame]:
    video = SHARED_DATA / "video" / "vtest.avi"
    if video.exists():
        import itertools

        images = list(itertools.islice(iter_images(video), count))
        source = f"{video.name} (real footage)"
    else:
        from PIL import Image, ImageDraw

        images = []
        for i in range(count):
            img = Image.new("RGB", (640, 480), (40, 60, 80))
            ImageDraw.Draw(img).rectangle([i * 5, 100, i * 5 + 80, 300], fill=(200, 180, 20))
            images.append(img)
        source = "synthetic (shared data absent)"
    frames = [encode_jpeg(img, size=(640, 480), quality=80) for img in images]
    print(
        f"frames: {len(frames)} from {source}, mean "
        f"{sum(len(f.jpeg) for f in frames) / len(frames) / 1024:.0f} KiB"
    )
    return frames


async def drive(
    url: str, tokens: list[str], frames: list[EncodedFrame], fps: float, seconds: float
) -> dict[str, Any]:
    rtts: list[float] = []
    hello: list[float] = []

    async def one(token: str, offset: int) -> ReplayClient:
        client = ReplayClient(url, token)
        await client.connect()
        hello.append(client.stats.hello_to_ready_ms)
        sent: dict[int, float] = {}

        def on_message(item: Any) -> None:
            if isinstance(item.message, Pong) and item.message.t in sent:
                rtts.append((time.perf_counter() - sent.pop(item.message.t)) * 1000)

        client.on_message = on_message

        async def pinger() -> None:
            for n in range(int(seconds)):
                await asyncio.sleep(1.0)  # one probe a second
                sent[n] = time.perf_counter()
                await client.send(Ping(t=n))

        rotated = frames[offset % len(frames) :] + frames[: offset % len(frames)]
        cycle = (rotated[i % len(rotated)] for i in range(int(fps * seconds)))
        await asyncio.gather(client.stream(cycle, fps=fps), pinger())
        await client.close()
        return client

    clients = await asyncio.gather(*(one(t, i * 7) for i, t in enumerate(tokens)))
    return {
        "hello_ms": hello,
        "ping_rtt_ms": rtts,
        "frames_sent": sum(c.stats.frames_sent for c in clients),
        "frames_late": sum(c.stats.frames_late for c in clients),
        "observations": sum(len(c.stats.of_type(ObservationMsg)) for c in clients),
    }


def measure(kind: str, args: argparse.Namespace, frames: list[EncodedFrame]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    snap_q = ctx.Queue()
    tmp = tempfile.mkdtemp()
    db = str(Path(tmp) / "bench.db")
    tokens: list[str] = []
    if kind == "seealoud":
        from server.auth import UserStore
        from server.db import connect

        store = UserStore(connect(db))
        tokens = [store.add(f"user{i}") for i in range(args.clients)]
        proc = ctx.Process(
            target=_run_seealoud, args=(db, port_q, args.model_ms / 1000, snap_q), daemon=True
        )
    else:
        tokens = ["unused"] * args.clients
        proc = ctx.Process(target=_run_baseline, args=(port_q,), daemon=True)
    proc.start()
    port = port_q.get(timeout=60)
    ps = psutil.Process(proc.pid)
    time.sleep(0.5)
    rss_before = ps.memory_info().rss
    cpu_before = ps.cpu_times()
    url = f"ws://127.0.0.1:{port}/ws"
    rss_samples: list[int] = []

    async def run() -> dict[str, Any]:
        async def sample_rss() -> None:
            while True:
                await asyncio.sleep(1.0)  # memory sampled once a second
                rss_samples.append(ps.memory_info().rss)

        sampler = asyncio.create_task(sample_rss())
        try:
            return await drive(url, tokens, frames, args.fps, args.seconds)
        finally:
            sampler.cancel()

    result = asyncio.run(run())
    cpu_after = ps.cpu_times()
    result["rss_before_mb"] = rss_before / 2**20
    warm = rss_samples[len(rss_samples) // 6 :] or rss_samples
    result["rss_warm_mb"] = warm[0] / 2**20 if warm else float("nan")
    result["rss_end_mb"] = ps.memory_info().rss / 2**20
    cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    result["server_cpu_ms_per_frame"] = cpu_s * 1000 / max(1, result["frames_sent"])
    if kind == "seealoud":
        snap_q.put("snapshot")
        result["metrics"] = port_q.get(timeout=30)
    proc.terminate()
    proc.join(5)
    return result


def _triple(values: list[float]) -> str:
    top = max(values) if values else float("nan")
    return f"{percentile(values, 0.5):.2f} / {percentile(values, 0.95):.2f} / {top:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model-ms", type=float, default=300.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"load: {args.clients} clients x {args.fps:g} fps x {args.seconds:g} s, 640x480 JPEG; "
        f"model double {args.model_ms:g} ms/call"
    )
    frames = load_frames(120)
    results = {kind: measure(kind, args, frames) for kind in ("baseline", "seealoud")}
    ours, base = results["seealoud"], results["baseline"]
    m = ours["metrics"]
    cpu_ratio = ours["server_cpu_ms_per_frame"] / max(1e-9, base["server_cpu_ms_per_frame"])
    rows = []
    for name, r in (("bare websockets (baseline)", base), ("SeeAloud server", ours)):
        rows.append(
            [
                name,
                f"{percentile(r['hello_ms'], 0.5):.2f} / {percentile(r['hello_ms'], 0.95):.2f}",
                r["frames_sent"],
                _triple(r["ping_rtt_ms"]),
                f"{r['server_cpu_ms_per_frame']:.3f}",
                f"{r['rss_before_mb']:.0f} / {r['rss_warm_mb']:.0f} / {r['rss_end_mb']:.0f}",
            ]
        )
    print()
    print(
        markdown_table(
            [
                "server",
                "hello->ready ms p50/p95",
                "frames sent",
                "ping RTT ms p50/p95/max",
                "server CPU ms/frame",
                "RSS MiB idle/warm/end",
            ],
            rows,
        )
    )
    ingest = m["ingest"]
    print()
    print(
        markdown_table(
            ["SeeAloud ingest (receive->validate->slot)", "value"],
            [
                ["frames received", m["frames_received"]],
                ["ingest p50 ms", ingest["p50_ms"]],
                ["ingest p95 ms (target < 2)", ingest["p95_ms"]],
                ["ingest p99 ms", ingest["p99_ms"]],
                ["frames superseded before the detector (newest wins)", m["frames_dropped"]],
                ["frames the change detector passed to the model", m["detector_fires"]],
                ["of those, superseded while the model was busy", m["model_frames_dropped"]],
                ["model calls", m["analyses"]],
                ["frames late at the client", ours["frames_late"]],
                [
                    "CPU per frame vs baseline",
                    f"{cpu_ratio:.2f}x",
                ],
            ],
        )
    )
    path = write_json("ingest", {"machine": machine(), "args": vars(args), "results": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
