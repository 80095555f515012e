"""Stream a video source to a SeeAloud server, as a phone would.

A recording (file, image folder) is sent at its own frame rate; a live source
(camera, stream URL; ``seealoud_client.sources``) as its frames come. Typed
questions can be asked at given times, and everything that comes back is
recorded with its arrival time. The tests and the benchmarks drive the server
with ``ReplayClient``; the CLI (``seealoud watch``, alias ``replay``) prints what
comes back, for people or (``--jsonl``) for programs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import wave
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from protocol import (
    PROTOCOL_VERSION,
    AudioChunk,
    AudioStart,
    AudioStop,
    Bye,
    CameraFrame,
    Hello,
    Message,
    Question,
    Ready,
    SpeechChunk,
    decode,
    encode,
)
from protocol import Error as ErrorMsg
from protocol.codec import as_data
from seealoud_client.events import to_event
from seealoud_client.frames import EncodedFrame, encode_jpeg, iter_images, video_fps
from seealoud_client.sources import LiveSource, SourceSpec

CAPTURES_KEPT = 512


class ReplayError(Exception):
    """The server refused the session or the connection failed."""


@dataclass(kw_only=True, repr=False)
class Received:
    """One message from the server and when it arrived (seconds since start)."""

    at: float
    message: Message

    def __repr__(self) -> str:
        return f"Received(at={self.at:.3f}, {self.message!r})"


@dataclass(kw_only=True)
class ReplayStats:
    """What a replay did and saw."""

    hello_to_ready_ms: float = 0.0
    frames_sent: int = 0
    frames_late: int = 0
    received: list[Received] = field(default_factory=list)

    def of_type(self, cls: type[Message]) -> list[Message]:
        return [r.message for r in self.received if isinstance(r.message, cls)]


class ReplayClient:
    """A phone-like client over one websocket connection."""

    def __init__(self, url: str, token: str, *, client_name: str = "seealoud-replay") -> None:
        self.url = url
        self.token = token
        self.client_name = client_name
        self.stats = ReplayStats()
        self.ready: Ready | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()
        self._seq = itertools.count()
        self.captured: OrderedDict[int, int] = OrderedDict()
        """Capture time (ms) of the last frames sent, by sequence number."""
        self.on_message: Callable[[Received], None] | None = None

    async def connect(self, *, open_timeout: float = 10.0) -> Ready:
        """Open the socket, say hello, and wait for ready (or raise ReplayError)."""
        self._ws = await connect(
            self.url, compression=None, open_timeout=open_timeout, max_size=None
        )
        started = time.perf_counter()
        await self._ws.send(
            encode(Hello(protocol=PROTOCOL_VERSION, token=self.token, client=self.client_name))
        )
        first = decode(await asyncio.wait_for(self._ws.recv(), open_timeout))
        self.stats.hello_to_ready_ms = (time.perf_counter() - started) * 1000
        if isinstance(first, ErrorMsg):
            await self._ws.close()
            raise ReplayError(f"server refused the session: {first.code}: {first.message}")
        if not isinstance(first, Ready):
            raise ReplayError(f"expected ready, got {first.wire_type()}")
        self.ready = first
        self._t0 = time.monotonic()
        self._reader = asyncio.create_task(self._read())
        return first

    async def _read(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            item = Received(at=time.monotonic() - self._t0, message=decode(raw))
            self.stats.received.append(item)
            if self.on_message is not None:
                self.on_message(item)

    async def send(self, message: Message) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send(encode(message))

    async def send_frame(self, frame: EncodedFrame, *, capture_ms: int | None = None) -> None:
        ts = capture_ms if capture_ms is not None else int(time.time() * 1000)
        seq = next(self._seq)
        self.captured[seq] = ts
        if len(self.captured) > CAPTURES_KEPT:
            self.captured.popitem(last=False)
        await self.send(
            CameraFrame(
                seq=seq,
                ts=ts,
                width=frame.width,
                height=frame.height,
                payload=frame.jpeg,
            )
        )
        self.stats.frames_sent += 1

    async def stream(
        self,
        frames: Iterable[EncodedFrame],
        *,
        fps: float,
        questions: dict[float, str] | None = None,
        duration_s: float | None = None,
    ) -> None:
        """Send frames at ``fps`` (real time), asking each question at its time."""
        pending = sorted((questions or {}).items())
        start = time.monotonic()
        for index, frame in enumerate(frames):
            due = start + index / fps
            if duration_s is not None and due - start >= duration_s:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing to the camera's rate
            elif delay < -1.0 / fps:
                self.stats.frames_late += 1
            while pending and pending[0][0] <= due - start:
                await self.send(Question(text=pending.pop(0)[1]))
            await self.send_frame(frame)

    async def stream_live(
        self,
        source: LiveSource,
        *,
        max_fps: float | None = None,
        questions: dict[float, str] | None = None,
        duration_s: float | None = None,
        long_side: int | None = 640,
        quality: int = 80,
    ) -> None:
        """Send a live source's newest frame as each arrives (at most ``max_fps``), with
        its capture time, until the source ends or ``duration_s`` passes."""
        pending = sorted((questions or {}).items())
        start = time.monotonic()
        next_due = start
        source.start()
        while True:
            remaining = None if duration_s is None else start + duration_s - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    frame = await source.next_frame()
            except TimeoutError:
                break
            if frame is None:
                break
            if max_fps and time.monotonic() < next_due:
                continue  # above the rate asked for: this frame is skipped, not queued
            next_due = max(next_due + 1 / max_fps, time.monotonic()) if max_fps else next_due
            elapsed = time.monotonic() - start
            while pending and pending[0][0] <= elapsed:
                await self.send(Question(text=pending.pop(0)[1]))
            encoded = await asyncio.to_thread(
                encode_jpeg, frame.image, long_side=long_side, quality=quality
            )
            await self.send_frame(encoded, capture_ms=frame.captured_ms)

    async def send_wav(self, path: Path, *, chunk_ms: int = 20, realtime: bool = True) -> None:
        """Speak a question from a mono PCM16 WAV: audio-start, 20 ms chunks, audio-stop."""
        with wave.open(str(path), "rb") as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise ReplayError(f"{path}: need mono 16-bit PCM WAV")
            rate = wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
        step = rate * chunk_ms // 1000 * 2
        await self.send(AudioStart(rate=rate))
        start = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), step)):
            if realtime:
                delay = start + index * chunk_ms / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing to the microphone's rate
            await self.send(
                AudioChunk(
                    seq=index,
                    ts=int(time.time() * 1000),
                    rate=rate,
                    payload=pcm[offset : offset + step],
                )
            )
        await self.send(AudioStop())

    async def close(self) -> None:
        if self._ws is None:
            return
        try:
            await self._ws.send(encode(Bye(reason="replay finished")))
            await self._ws.close()
        finally:
            if self._reader is not None:
                await asyncio.gather(self._reader, return_exceptions=True)
            self._ws = None


def load_frames(
    source: Path,
    *,
    long_side: int | None = 640,
    quality: int = 80,
    limit: int | None = None,
) -> list[EncodedFrame]:
    """Decode and encode a source's frames up front, so pacing is not disturbed; each
    keeps its shape, with its long side at most ``long_side``."""
    images = iter_images(source)
    if limit is not None:
        images = itertools.islice(images, limit)
    return [encode_jpeg(img, long_side=long_side, quality=quality) for img in images]


def source_fps(source: Path, default: float = 10.0) -> float:
    """A video's own frame rate; ``default`` for images."""
    if source.is_dir() or source.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp"}:
        return default
    return video_fps(source)


def describe(item: Received) -> str:
    """One printable line for a received message (no audio bytes)."""
    msg = item.message
    if isinstance(msg, SpeechChunk):
        return f"{item.at:8.3f}s speech-chunk {msg.utterance} #{msg.seq} {len(msg.payload)} B"
    body = json.dumps(as_data(msg), ensure_ascii=False)
    return f"{item.at:8.3f}s {msg.wire_type()} {body[:300]}"


async def run_watch(
    source: str,
    *,
    url: str,
    token: str,
    fps: float | None,
    questions: dict[float, str],
    duration_s: float | None,
    wav: Path | None,
    loop: bool,
    linger_s: float,
    jsonl: bool = False,
    printer: Callable[[str], None] = print,
    status: Callable[[str], None] | None = None,
) -> ReplayStats:
    """The ``seealoud watch``/``replay`` command: stream, print what comes back, summarise.

    Human lines go to ``printer``; with ``jsonl`` only results go there, one JSON
    object each, and the session lines go to ``status`` (stderr by default).
    """
    spec = SourceSpec.parse(source)
    say = status or (printer if not jsonl else lambda line: print(line, file=sys.stderr))
    live: LiveSource | None = None
    frames: list[EncodedFrame] = []
    if spec.live:
        live = await asyncio.to_thread(LiveSource, spec)
    else:
        frames = await asyncio.to_thread(load_frames, Path(spec.target))
    client = ReplayClient(url, token)
    try:
        ready = await client.connect()
    except BaseException:
        if live is not None:
            await live.close()
        raise
    say(
        f"ready: session {ready.session} as {ready.user} ({ready.role}), "
        f"hello->ready {client.stats.hello_to_ready_ms:.1f} ms, watching {spec.describe()}"
    )

    def on_message(item: Received) -> None:
        if not jsonl:
            printer(describe(item))
            return
        seq = getattr(item.message, "frame_seq", None)
        captured = client.captured.get(seq) if isinstance(seq, int) else None
        event = to_event(item.message, at=item.at, captured_ms=captured)
        if event is not None:
            printer(event.to_json())

    client.on_message = on_message
    try:
        if live is not None:
            streaming = asyncio.create_task(
                client.stream_live(live, max_fps=fps, questions=questions, duration_s=duration_s)
            )
        else:
            rate = fps or source_fps(Path(spec.target))
            sequence: Iterable[EncodedFrame] = itertools.cycle(frames) if loop else frames
            streaming = asyncio.create_task(
                client.stream(sequence, fps=rate, questions=questions, duration_s=duration_s)
            )
        if wav is not None:
            await client.send_wav(wav)
        await streaming
        await asyncio.sleep(linger_s)  # let late answers arrive before closing
    finally:
        await client.close()
        if live is not None:
            await live.close()
    s = client.stats
    dropped = f", {live.dropped} dropped at the source" if live is not None else ""
    say(
        f"sent {s.frames_sent} frames ({s.frames_late} late{dropped}); "
        f"received {len(s.received)} messages"
    )
    return s
