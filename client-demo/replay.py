"""Replay a video file (or image folder) to a SeeAloud server, as a phone would.

Streams frames at the source's real frame rate, can ask typed questions at
given times, and records everything that comes back with its arrival time.
The tests and the benchmarks drive the server with ``ReplayClient``; the CLI
(``seealoud replay``) prints what comes back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import wave
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
from seealoud_client.frames import EncodedFrame, encode_jpeg, iter_images, video_fps


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
        await self.send(
            CameraFrame(
                seq=next(self._seq),
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
    size: tuple[int, int] | None = (640, 480),
    quality: int = 80,
    limit: int | None = None,
) -> list[EncodedFrame]:
    """Decode and encode a source's frames up front, so pacing is not disturbed."""
    images = iter_images(source)
    if limit is not None:
        images = itertools.islice(images, limit)
    return [encode_jpeg(img, size=size, quality=quality) for img in images]


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


async def run_replay(
    source: Path,
    *,
    url: str,
    token: str,
    fps: float | None,
    questions: dict[float, str],
    duration_s: float | None,
    wav: Path | None,
    loop: bool,
    linger_s: float,
    printer: Callable[[str], None] = print,
) -> ReplayStats:
    """The ``seealoud replay`` command: stream, print what comes back, summarise."""
    frames = load_frames(source)
    rate = fps or source_fps(source)
    client = ReplayClient(url, token)
    ready = await client.connect()
    printer(
        f"ready: session {ready.session} as {ready.user} ({ready.role}), "
        f"hello->ready {client.stats.hello_to_ready_ms:.1f} ms"
    )
    client.on_message = lambda item: printer(describe(item))
    sequence: Iterable[EncodedFrame] = itertools.cycle(frames) if loop else frames
    try:
        streaming = asyncio.create_task(
            client.stream(sequence, fps=rate, questions=questions, duration_s=duration_s)
        )
        if wav is not None:
            await client.send_wav(wav)
        await streaming
        await asyncio.sleep(linger_s)  # let late answers arrive before closing
    finally:
        await client.close()
    s = client.stats
    printer(
        f"sent {s.frames_sent} frames at {rate:.1f} fps ({s.frames_late} late); "
        f"received {len(s.received)} messages"
    )
    return s
