"""Many phones against one server: how many this machine holds, and whether one bad
client (a `/metrics` poller, a client that stops reading) takes time from the others.

N phones stream real footage (640x480 JPEG from ``vtest.avi``, 10 fps) and ask a
spoken question every ``--ask-every`` seconds (espeak-ng speech through the real
recogniser); the server runs in its own process with the real speech models and a
scripted vision double that holds one model thread ``--model-ms`` per call (a GPU
does one call at a time).

For each N: sessions held to the end, frames sent / received / analysed / dropped
(superseded before the change detector, superseded while waiting for the model),
frame -> first hazard speech p50/p95 (at the phone), frame -> finished look
p50/p95 (in the server), ingest p95 (the worst of the server's 4096-sample
windows, read once a second), the longest time a session went without a look
(starvation, in heartbeats, counted from its first frame to its last), RSS and
open files at start and end.

N steps up (``--steps``) until a criterion fails (ingest p95 >= 5 ms, a session
more than 3 heartbeats without a look, or a session not held) or the search has
used ``--search-budget`` seconds. At half the largest N held the same load runs
plain, with 16 clients polling ``/metrics`` as fast as they can, and with one
client that stops reading (the server must close it, not wait), and with one
account at its session cap sending the heaviest frames the server accepts and
"read this" every 2 s (``--extras heavy``: its decode budget must keep the others'
figures); then, with
``--soak``, a long run at half that N sampling RSS and open files every second.
``--openai-steps`` runs the vision path for real: the tiny random-weight Qwen3-VL
checkpoint (``tests/tiny_vlm.py``) in process and behind ``transformers serve`` on
loopback (``--vision openai --vlm-url``), side by side.

Baseline in the same run: one phone alone (the first step); ratios are against it.

    python benchmarks/load.py [--steps 1,12,16,24,32,48,64] [--seconds 40] [--soak 600]
    python benchmarks/load.py --half 8 --extras none --soak 600   # soak only, N=8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import protocol as p
from benchmarks.common import (
    SHARED_DATA,
    machine,
    machine_load,
    markdown_table,
    percentile,
    write_json,
)
from server.analysis import AnalysisRequest, Analyzer
from server.settings import UserSettings

HEARTBEAT_S = UserSettings().heartbeat_s or 10.0
INGEST_LIMIT_MS = 5.0
STARVED_HEARTBEATS = 3.0
LOGIN_TRIES = 6  # the server lets a few hellos per address wait at once; phones retry


@dataclass(frozen=True)
class Vision:
    """What the server process looks with: the model double, or a real backend."""

    kind: str = "double"  # "double", "transformers" (in process) or "openai" (HTTP)
    model_s: float = 0.2
    model: str | None = None
    url: str | None = None

    def label(self) -> str:
        if self.kind == "double":
            return f"model double {self.model_s * 1000:.0f} ms"
        if self.kind == "openai":
            return "tiny Qwen3-VL via transformers serve (openai)"
        return "tiny Qwen3-VL in process"


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


@dataclass
class SessionLooks:
    """When one session was looked at: O(1) memory however long the run."""

    first: float
    last: float
    longest_gap: float = 0.0
    count: int = 1


class LookRecorder:
    """Measurement wrapper around the server's analyzer (not a double: every call goes
    to the real one). It notes when each session's look finished and how long after
    its frame arrived, because a real model's empty answers send the phone nothing,
    so only the server can tell whether a session was looked at."""

    def __init__(self, inner: Analyzer) -> None:
        self.inner = inner
        self.name = inner.name
        self.looks: dict[str, SessionLooks] = {}
        self.frame_to_look_s: deque[float] = deque(maxlen=20_000)

    @property
    def ready(self) -> bool:
        return bool(getattr(self.inner, "ready", True))

    async def analyze(self, request: AnalysisRequest) -> p.ObservationMsg | None:
        result = await self.inner.analyze(request)  # a failed look raises: not a look
        now = time.monotonic()
        self.frame_to_look_s.append(now - request.frame.received_at)
        seen = self.looks.get(request.session)
        if seen is None:
            self.looks[request.session] = SessionLooks(first=now, last=now)
        else:
            seen.longest_gap = max(seen.longest_gap, now - seen.last)
            seen.last = now
            seen.count += 1
        return result


def _serve(db: str, pipe: Any, vision: Vision) -> None:
    """The server process: real speech, the chosen vision; answers snapshot requests
    on ``pipe`` (one at a time) until told ``stop``."""
    import psutil

    from server.analysis import build_engine
    from server.app import SeeAloudServer
    from server.auth import UserStore
    from server.config import ServerConfig
    from server.db import connect as db_connect
    from speech.asr import AsrOptions, SpeechRecognizer
    from speech.tts import SpeechSynthesizer
    from vision.text import TextReader

    async def main() -> None:
        cfg = ServerConfig(
            host="127.0.0.1",
            port=0,
            db_path=Path(db),
            max_sessions_per_account=4,
            max_sessions_per_address=10_000,  # every phone comes from 127.0.0.1
            vision_backend="openai" if vision.kind == "openai" else "transformers",
            model=vision.model,
            vlm_url=vision.url,
            device="cpu",
        )
        engine = build_engine(cfg) if vision.kind != "double" else None
        server = SeeAloudServer(
            cfg,
            store=UserStore(db_connect(db)),
            analyzer=HazardModelDouble(vision.model_s) if engine is None else None,
            engine=engine,
            tts=SpeechSynthesizer(),
            asr=SpeechRecognizer(AsrOptions(model="tiny.en", device="cpu")),
            text=TextReader(),  # as the real job runs: "read this" uses the OCR
        )
        inner = server.ctx.services.analyzer
        assert inner is not None
        recorder = LookRecorder(inner)
        server.ctx.services.analyzer = recorder
        await server.start()
        for loader in (server.tts, server.asr, server.vision, server.text):
            if loader is not None:
                await asyncio.wait_for(loader.loaded.wait(), 300)
        if server.vision is not None and not server.vision.ready:
            pipe.send(f"vision failed: {server.vision.reason()}")
            return
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
                snap["now"] = time.monotonic()
                if request == "full":
                    lat = sorted(recorder.frame_to_look_s)
                    snap["look_p50_ms"] = percentile(lat, 0.5) * 1000
                    snap["look_p95_ms"] = percentile(lat, 0.95) * 1000
                    snap["looks"] = {
                        sid: (s.first, s.last, s.longest_gap, s.count)
                        for sid, s in list(recorder.looks.items())
                    }
                pipe.send(snap)

        pipe.send(server.port)
        await loop.run_in_executor(None, answer)
        await asyncio.wait_for(server.close(), 30)

    threading.current_thread().name = "bench-server"
    asyncio.run(main())


@dataclass
class PhoneStats:
    session: str = ""
    frames_sent: int = 0
    observations: int = 0
    first_frame: float = 0.0
    last_frame: float = 0.0
    speech_after_frame: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    held: bool = False
    closed: str = ""
    login_retries: int = 0


async def phone(
    url: str,
    token: str,
    frames: list[bytes],
    question: bytes,
    args: argparse.Namespace,
    offset: int,
    seconds: float,
    start_delay: float = 0.0,
) -> PhoneStats:
    """One phone: camera at ``args.fps``, a spoken question every ``args.ask_every`` s,
    reading everything the server sends; held if the server never closed it."""
    stats = PhoneStats()
    sent_at: dict[int, float] = {}
    last_obs_seq: list[int] = []
    said_bye = False
    # People do not all log in at the same millisecond: 20 ms apart (64 phones: 1.3 s).
    await asyncio.sleep(start_delay)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for attempt in range(LOGIN_TRIES):
                ws = await stack.enter_async_context(connect(url, max_size=None, open_timeout=30))
                await ws.send(p.encode(p.Hello(protocol=1, token=token)))
                ready = p.decode(await asyncio.wait_for(ws.recv(), 30))
                if isinstance(ready, p.Ready) or attempt == LOGIN_TRIES - 1:
                    break
                if not (isinstance(ready, p.Error) and ready.code == p.ErrorCode.RATE_LIMITED):
                    break
                stats.login_retries += 1
                await asyncio.sleep(0.2 * (attempt + 1))  # a phone's reconnect backoff
            if not isinstance(ready, p.Ready):
                stats.closed = f"no ready: {ready!r}"[:80]
                return stats
            stats.session = ready.session

            async def read() -> None:
                async for raw in ws:
                    msg = p.decode(raw)
                    now = time.monotonic()
                    if isinstance(msg, p.ObservationMsg):
                        stats.observations += 1
                        if msg.frame_seq is not None:
                            last_obs_seq.append(msg.frame_seq)
                    elif (
                        isinstance(msg, p.SpeechStart) and msg.priority == "hazard" and last_obs_seq
                    ):
                        sent = sent_at.get(last_obs_seq[-1])
                        if sent is not None:
                            stats.speech_after_frame.append((now - sent) * 1000)
                    elif isinstance(msg, p.Error):
                        stats.errors[msg.code] = stats.errors.get(msg.code, 0) + 1

            reader = asyncio.create_task(read())
            asking: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            stats.first_frame = start
            next_question = start + args.ask_every * (0.3 + 0.7 * (offset % 7) / 7)
            n = 0
            while (due := start + n / args.fps) < start + seconds and not reader.done():
                if (delay := due - time.monotonic()) > 0:
                    await asyncio.sleep(delay)  # pacing to the camera's rate
                jpeg = frames[(offset + n) % len(frames)]
                sent_at[n] = time.monotonic()
                frame = p.CameraFrame(
                    seq=n, ts=int(time.time() * 1000), width=640, height=480, payload=jpeg
                )
                await ws.send(p.encode(frame))
                stats.frames_sent += 1
                stats.last_frame = time.monotonic()
                if time.monotonic() >= next_question:
                    next_question += args.ask_every
                    task = asyncio.create_task(_ask(ws, question))
                    asking.add(task)
                    task.add_done_callback(asking.discard)
                n += 1
            for task in list(asking):
                task.cancel()
            if reader.done():
                stats.closed = f"closed by the server: {ws.close_code} {ws.close_reason}"
                return stats
            said_bye = True
            await ws.send(p.encode(p.Bye()))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, 10)
            stats.held = True
    except (OSError, ConnectionClosed, TimeoutError) as exc:
        if not said_bye:
            stats.closed = f"{type(exc).__name__}: {exc}"[:120]
        else:
            stats.held = True  # the server closed after our bye, as it should
    return stats


async def _ask(ws: ClientConnection, pcm: bytes) -> None:
    """A spoken question at the microphone's pace (20 ms chunks)."""
    with contextlib.suppress(Exception):
        await ws.send(p.encode(p.AudioStart(rate=16000)))
        for n, off in enumerate(range(0, len(pcm), 640)):
            await ws.send(p.encode(p.AudioChunk(seq=n, ts=n * 20, payload=pcm[off : off + 640])))
            await asyncio.sleep(0.02)  # pacing to the microphone's rate
        await ws.send(p.encode(p.AudioStop()))


def metrics_poller(url: str, until: float, counts: list[int]) -> None:
    """A thread fetching ``/metrics`` back to back until ``until`` (no login needed)."""
    while time.monotonic() < until:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                resp.read()
            counts.append(1)
        except OSError:
            time.sleep(0.05)  # a refused poll: back off briefly, bounded by ``until``


def metrics_pollers(url: str, clients: int, seconds: float, pipe: Any) -> None:
    """A process of ``clients`` polling threads for ``seconds``; sends the poll count."""
    until = time.monotonic() + seconds
    counts: list[int] = []
    threads = [
        threading.Thread(target=metrics_poller, args=(url, until, counts), daemon=True)
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
    pipe.send(len(counts))


async def stuck_client(url: str, token: str, frames: list[bytes], seconds: float) -> str:
    """Sends frames and questions, never reads a byte: the server must close it, not
    wait. Its own keepalive is off, so any close is the server's doing."""
    ws = await connect(url, max_size=None, max_queue=1, ping_interval=None)
    ws.transport.pause_reading()  # stop reading at the socket
    start = time.monotonic()
    n = 0
    try:
        await ws.send(p.encode(p.Hello(protocol=1, token=token)))
        while time.monotonic() - start < seconds:
            frame = p.CameraFrame(
                seq=n, ts=n, width=640, height=480, payload=frames[n % len(frames)]
            )
            await asyncio.wait_for(ws.send(p.encode(frame)), 5)
            await asyncio.wait_for(ws.send(p.encode(p.Question(text="what is ahead?"))), 5)
            n += 1
            await asyncio.sleep(0.1)  # pacing to the camera's rate
        return f"stuck client sent {n} frames, still writable after {seconds:.0f} s"
    except (ConnectionClosed, OSError, TimeoutError) as exc:
        return (
            f"stuck client sent {n} frames, its writes failed after "
            f"{time.monotonic() - start:.1f} s ({type(exc).__name__})"
        )
    finally:
        ws.transport.abort()


def heavy_frames() -> list[bytes]:
    """Frames as heavy as the server accepts: 2000x2000 progressive JPEG (4 MP, the
    pixel cap; about 25x a 640x480 frame's decode), from the footage."""
    from seealoud_client.frames import iter_images

    out = []
    for img in itertools.islice(iter_images(SHARED_DATA / "video" / "vtest.avi"), 0, 40, 10):
        buf = io.BytesIO()
        img.convert("RGB").resize((2000, 2000)).save(buf, "JPEG", quality=85, progressive=True)
        out.append(buf.getvalue())
    return out


async def heavy_client(url: str, token: str, sessions: int, seconds: float) -> str:
    """One account at its session cap, each session sending the heaviest frames the
    server accepts as fast as it will take them, and "read this" every 2 s: how much
    of the machine one account can take from everybody else."""
    frames = heavy_frames()
    sent = [0] * sessions
    refused: dict[str, int] = {}

    async def one(k: int) -> None:
        try:
            async with connect(url, max_size=None, open_timeout=20) as ws:
                await ws.send(p.encode(p.Hello(protocol=1, token=token)))

                async def drain() -> None:
                    with contextlib.suppress(ConnectionClosed):
                        async for raw in ws:
                            if isinstance(raw, str) and '"error"' in raw:
                                msg = p.decode(raw)
                                if isinstance(msg, p.Error):
                                    refused[msg.code] = refused.get(msg.code, 0) + 1

                reader = asyncio.create_task(drain())
                start = time.monotonic()
                asked = start
                n = 0
                while time.monotonic() - start < seconds:
                    jpeg = frames[n % len(frames)]
                    msg = p.CameraFrame(seq=n, ts=n, width=2000, height=2000, payload=jpeg)
                    await asyncio.wait_for(ws.send(p.encode(msg)), 5)
                    n += 1
                    sent[k] += 1
                    if time.monotonic() - asked >= 2.0:
                        asked = time.monotonic()
                        q = p.Question(text="read this", intent="read")
                        await asyncio.wait_for(ws.send(p.encode(q)), 5)
                    await asyncio.sleep(0.02)  # 50 a second: past every frame limit
                reader.cancel()
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1

    await asyncio.gather(*(one(k) for k in range(sessions)))
    said = ", ".join(f"{code} {n}" for code, n in sorted(refused.items())) or "none"
    return (
        f"one account, {sessions} sessions, sent {sum(sent):,} 2000x2000 progressive frames "
        f"and 'read this' every 2 s (told: {said})"
    )


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


class ServerProcess:
    """The server in a spawned process and its snapshot pipe (one caller at a time)."""

    def __init__(self, n_users: int, vision: Vision) -> None:
        ctx = mp.get_context("spawn")
        self.here, there = ctx.Pipe()
        self.dir = tempfile.mkdtemp(prefix="seealoud-load-")
        db = str(Path(self.dir) / "load.db")
        from server.auth import UserStore
        from server.db import connect as db_connect

        store = UserStore(db_connect(db))
        self.tokens = [store.add(f"user{i}") for i in range(n_users)]
        store.connection.close()
        # Not a daemon: the server may start worker processes of its own (speech out).
        self.proc = ctx.Process(target=_serve, args=(db, there, vision), daemon=False)
        self.proc.start()
        deadline = time.monotonic() + 360
        while not self.here.poll(1.0):  # waiting for the port, or the child's death
            if not self.proc.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start (exit code {self.proc.exitcode})")
        first = self.here.recv()
        if isinstance(first, str):
            self.stop()
            raise RuntimeError(first)
        self.port = int(first)
        self._lock = threading.Lock()

    def snapshot(self, kind: str = "snap") -> dict[str, Any]:
        with self._lock:
            self.here.send(kind)
            if not self.here.poll(30):
                raise RuntimeError("the server did not answer a snapshot in 30 s")
            return dict(self.here.recv())

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.here.send("stop")
        self.proc.join(40)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_step(
    n: int,
    args: argparse.Namespace,
    frames: list[bytes],
    question: bytes,
    *,
    extra: str = "",
    seconds: float | None = None,
    vision: Vision | None = None,
) -> dict[str, Any]:
    """N phones for ``seconds`` against a fresh server process; one table row."""
    seconds = seconds or args.seconds
    vision = vision or Vision(model_s=args.model_ms / 1000)
    server = ServerProcess(n + 1, vision)
    url = f"ws://127.0.0.1:{server.port}/ws"
    load_before = machine_load()
    before = server.snapshot()
    samples: list[dict[str, Any]] = []

    async def sample(until: float) -> None:
        """Once a second: the ingest window, sessions open, RSS and files."""
        while time.monotonic() < until:
            snap = await asyncio.to_thread(server.snapshot)
            samples.append(
                {
                    "t": snap["now"],
                    "ingest_p95_ms": snap["ingest"].get("p95_ms"),
                    "sessions": snap["sessions"],
                    "rss_mb": round(snap["rss_mb"], 1),
                    "fds": snap["fds"],
                }
            )
            await asyncio.sleep(1.0)  # sampling period, bounded by ``until``

    async def drive() -> tuple[list[PhoneStats], str]:
        until = time.monotonic() + seconds
        jobs = [
            phone(url, t, frames, question, args, i * 13, seconds, start_delay=0.02 * i)
            for i, t in enumerate(server.tokens[:n])
        ]
        sampler = asyncio.create_task(sample(until + 5))
        note = ""
        if extra == "metrics":
            # In a process of their own, so their threads do not slow the phones' loop.
            ctx = mp.get_context("spawn")
            here, there = ctx.Pipe()
            page = f"http://127.0.0.1:{server.port}/metrics"
            pollers = ctx.Process(target=metrics_pollers, args=(page, 16, seconds, there))
            pollers.start()
            phones = await asyncio.gather(*jobs)
            polls = await asyncio.to_thread(lambda: here.recv() if here.poll(60) else -1)
            await asyncio.to_thread(pollers.join, 10)
            note = f"16 clients polled /metrics {polls:,} times"
        elif extra == "heavy":
            heavy = asyncio.create_task(heavy_client(url, server.tokens[n], 3, seconds))
            phones = await asyncio.gather(*jobs)
            note = await heavy
        elif extra == "stuck":
            stuck = asyncio.create_task(stuck_client(url, server.tokens[n], frames, seconds))
            phones = await asyncio.gather(*jobs)
            note = await stuck
        else:
            phones = await asyncio.gather(*jobs)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        return list(phones), note

    phones, note = asyncio.run(drive())
    phones_end = min((s.last_frame for s in phones if s.frames_sent), default=0.0)
    settle_until = time.monotonic() + 15
    after = server.snapshot("full")
    while after["sessions"] and time.monotonic() < settle_until:
        time.sleep(0.2)  # waiting for closes to finish, bounded by settle_until
        after = server.snapshot("full")
    server.stop()

    if extra == "stuck":
        # Only while the phones still run: then a drop from N+1 to N sessions is the
        # stuck one being closed.
        running = [s for s in samples if s["t"] < phones_end]
        opened = [s["t"] for s in running if s["sessions"] > n]
        closed = [s["t"] for s in running if opened and s["t"] > opened[0] and s["sessions"] <= n]
        if opened and closed:
            note += f"; server closed it {closed[0] - opened[0]:.0f} s after it opened"
        elif opened:
            note += "; the server had not closed it by the end"
    speech = [v for s in phones for v in s.speech_after_frame]
    looks = after.get("looks", {})
    gaps = []
    for s in phones:
        if not s.frames_sent:
            continue
        seen = looks.get(s.session)
        if seen is None:
            gaps.append(s.last_frame - s.first_frame)
            continue
        first, last, longest, _count = seen
        gaps.append(max(first - s.first_frame, longest, s.last_frame - last))
    ingest_windows = [x["ingest_p95_ms"] for x in samples if x["ingest_p95_ms"] is not None]
    server_errors = {k: v for k, v in after.get("errors", {}).items() if v}
    streaming = [s for s in phones if s.frames_sent]
    fps = sum(s.frames_sent for s in streaming) / max(1, len(streaming)) / seconds
    if retries := sum(s.login_retries for s in phones):
        note += f"; {retries} hellos told rate-limited and retried"
    if fps < 0.95 * args.fps:
        note += f"; phones managed {fps:.1f} fps of {args.fps:g} (the load generator is busy)"
    if extra == "soak" and samples:
        warm = next((x for x in samples if x["t"] - samples[0]["t"] >= 60), samples[0])
        note += (
            f"; RSS {samples[0]['rss_mb']:.0f} / {warm['rss_mb']:.0f} / {samples[-1]['rss_mb']:.0f}"
            f" MiB and open files {samples[0]['fds']} / {warm['fds']} / {samples[-1]['fds']}"
            " at start / 60 s / end of the stream"
        )
    closed = [s.closed for s in phones if s.closed]
    if closed:
        note += f"; {len(closed)} not held: {closed[0]}"
    return {
        "n": n,
        "extra": extra or "-",
        "vision": vision.label(),
        "seconds": seconds,
        "held": sum(1 for s in phones if s.held),
        "frames_sent": sum(s.frames_sent for s in phones),
        "received": after["frames_received"] - before["frames_received"],
        "analysed": after["analyses"] - before["analyses"],
        "dropped_before_detector": after["frames_dropped"] - before["frames_dropped"],
        "dropped_waiting_model": after["model_frames_dropped"] - before["model_frames_dropped"],
        "rejected": after["frames_rejected"] - before["frames_rejected"],
        "observations_at_phones": sum(s.observations for s in phones),
        "utterances": after.get("utterances", {}),
        "stale_drops": after.get("stale_drops", {}),
        "speech_p50": percentile(speech, 0.5),
        "speech_p95": percentile(speech, 0.95),
        "look_p50": after.get("look_p50_ms", float("nan")),
        "look_p95": after.get("look_p95_ms", float("nan")),
        "ingest_p95_ms": max(ingest_windows) if ingest_windows else None,
        "ingest_p95_end_ms": after["ingest"].get("p95_ms"),
        "max_gap_heartbeats": max(gaps) / HEARTBEAT_S if gaps else float("nan"),
        "rss_mb": (before["rss_mb"], after["rss_mb"]),
        "fds": (before["fds"], after["fds"]),
        "errors_at_phones": _sum_counts(s.errors for s in phones),
        "server_errors": server_errors,
        "rate_limited": after.get("rate_limited_by", {}),
        "load": (load_before, machine_load()),
        "samples": samples if extra == "soak" else [],
        "note": note.lstrip("; "),
    }


def _sum_counts(dicts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def passes(r: dict[str, Any]) -> list[str]:
    """The criteria a step failed (empty: it held)."""
    failed = []
    if r["ingest_p95_ms"] is None or r["ingest_p95_ms"] >= INGEST_LIMIT_MS:
        failed.append(f"ingest p95 {r['ingest_p95_ms']} ms >= {INGEST_LIMIT_MS:g} ms")
    if r["max_gap_heartbeats"] > STARVED_HEARTBEATS:
        failed.append(
            f"a session went {r['max_gap_heartbeats']:.1f} heartbeats without a look "
            f"(> {STARVED_HEARTBEATS:g})"
        )
    if r["held"] != r["n"]:
        failed.append(f"{r['n'] - r['held']} sessions not held")
    return failed


def ratio(value: float, base: float) -> str:
    if value != value or base != base or not base:
        return "-"
    return f"{value / base:.1f}x"


def row(r: dict[str, Any], base: dict[str, Any] | None) -> list[Any]:
    b50 = base["speech_p50"] if base else float("nan")
    l50 = base["look_p50"] if base else float("nan")
    return [
        r["n"],
        r["extra"],
        f"{r['held']}/{r['n']}",
        f"{r['frames_sent']} / {r['received']} / {r['analysed']} / "
        f"{r['dropped_before_detector']} + {r['dropped_waiting_model']}",
        f"{r['speech_p50']:.0f} / {r['speech_p95']:.0f} ({ratio(r['speech_p50'], b50)})",
        f"{r['look_p50']:.0f} / {r['look_p95']:.0f} ({ratio(r['look_p50'], l50)})",
        f"{r['utterances'].get('hazard', 0)} / {r['stale_drops'].get('warning', 0)}"
        f" / {r['utterances'].get('answer', 0)}",
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
    "frames sent / received / analysed / dropped (before detector + waiting for model)",
    "frame->hazard speech p50 / p95 ms (vs alone)",
    "frame->look p50 / p95 ms (vs alone)",
    "warnings spoken / dropped stale / answers spoken",
    "ingest p95 ms (worst window)",
    "longest without a look (heartbeats)",
    "RSS MiB",
    "open files",
    "note",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def transformers_serve(model: Path) -> Any:
    """`transformers serve` on loopback with ``model`` preloaded; yields its /v1 URL."""
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if exe is None:
        raise RuntimeError("`transformers serve` is not installed (transformers[serving])")
    port = _free_port()
    log = open(Path(tempfile.mkdtemp(prefix="tserve-")) / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [exe, "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited; see {log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("transformers serve did not start in 180 s") from None
                time.sleep(0.25)  # polling a starting process, bounded by the deadline
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def report(args: argparse.Namespace, results: list[dict[str, Any]], best: int, why: str) -> None:
    base = next((r for r in results if r["n"] == 1 and r["extra"] == "-"), None)
    print(f"\nmachine: {machine()}; load average at start {results[0]['load'][0]}")
    print(f"model double {args.model_ms:.0f} ms/call; real speech models (espeak-ng, tiny.en)")
    for label in dict.fromkeys(r["vision"] for r in results):
        rows = [r for r in results if r["vision"] == label]
        vbase = next((r for r in rows if r["n"] == 1 and r["extra"] == "-"), base)
        print(f"\n{label}:")
        print(markdown_table(HEADERS, [row(r, vbase) for r in rows]))
    if best:
        print(f"\nlargest N held (ingest p95 < 5 ms, none > 3 heartbeats without a look): {best}")
    if why:
        print(f"first failure: {why}")
    for r in results:
        if r["extra"] == "soak" and r["samples"]:
            s = r["samples"]
            warm = next((x for x in s if x["t"] - s[0]["t"] >= 60), s[0])
            print(
                f"\nsoak N={r['n']} {r['seconds']:.0f} s: RSS {s[0]['rss_mb']} MiB at start, "
                f"{warm['rss_mb']} after 60 s, {s[-1]['rss_mb']} at the end "
                f"(max {max(x['rss_mb'] for x in s)}); open files {s[0]['fds']}, "
                f"{warm['fds']}, {s[-1]['fds']} (max {max(x['fds'] for x in s)}); "
                f"after the phones left: {r['rss_mb'][1]:.0f} MiB, {r['fds'][1]} files"
            )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="1,12,16,24,32,48,64")
    ap.add_argument("--seconds", type=float, default=40.0, help="per step (> 3 heartbeats)")
    ap.add_argument("--search-budget", type=float, default=600.0, help="seconds for the search")
    ap.add_argument("--half", type=int, default=0, help="skip the search: run extras at this N")
    ap.add_argument("--extras", default="plain,metrics,stuck", help="or 'none'")
    ap.add_argument("--stuck-seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--ask-every", type=float, default=10.0)
    ap.add_argument("--model-ms", type=float, default=200.0)
    ap.add_argument("--soak", type=float, default=0.0, help="seconds of soak at half the best N")
    ap.add_argument("--openai-steps", default="", help="e.g. 1,4: tiny Qwen3-VL rows")
    ap.add_argument("--openai-seconds", type=float, default=0.0, help="their length")
    ap.add_argument("--out", default="load", help="results/<out>.json")
    args = ap.parse_args()
    frames = load_frames(120)
    question = question_pcm()
    print(f"machine: {machine()}; load average {machine_load()}", flush=True)
    results: list[dict[str, Any]] = []
    best, why = 0, ""

    def record(r: dict[str, Any]) -> None:
        results.append(r)
        base = next((x for x in results if x["n"] == 1 and x["vision"] == r["vision"]), None)
        print(markdown_table(HEADERS, [row(r, base)]), flush=True)
        print(f"  load {r['load']}; errors {r['errors_at_phones']} {r['server_errors']}")
        write_json(args.out, {"machine": machine(), "args": vars(args), "results": results})

    if args.half:
        half = args.half
    else:
        started = time.monotonic()
        for n in (int(x) for x in args.steps.split(",") if x):
            if time.monotonic() - started > args.search_budget:
                why = f"search budget of {args.search_budget:.0f} s used up before N={n}"
                break
            record(r := run_step(n, args, frames, question))
            if failed := passes(r):
                why = f"N={n}: " + "; ".join(failed)
                break
            best = n
        half = max(1, best // 2)
    for extra in args.extras.split(","):
        if extra == "plain" and any(r["n"] == half and r["extra"] == "-" for r in results):
            continue
        if extra in ("plain", "metrics", "heavy"):
            record(run_step(half, args, frames, question, extra="" if extra == "plain" else extra))
        elif extra == "stuck":
            record(
                run_step(half, args, frames, question, extra="stuck", seconds=args.stuck_seconds)
            )
    if args.openai_steps:
        from tests.tiny_vlm import build_tiny_qwen3_vl

        model = build_tiny_qwen3_vl(Path(tempfile.mkdtemp(prefix="tiny-qwen3-vl-")))
        steps = [int(x) for x in args.openai_steps.split(",") if x]
        seconds = args.openai_seconds or None
        for n in steps:
            vision = Vision("transformers", model=str(model))
            record(run_step(n, args, frames, question, vision=vision, seconds=seconds))
        with transformers_serve(model) as url:
            for n in steps:
                vision = Vision("openai", model=str(model), url=url)
                record(run_step(n, args, frames, question, vision=vision, seconds=seconds))
    if args.soak:
        record(run_step(half, args, frames, question, extra="soak", seconds=args.soak))
    report(args, results, best, why)
    write_json(
        args.out,
        {"machine": machine(), "args": vars(args), "results": results, "best": best, "why": why},
    )


if __name__ == "__main__":
    main()
