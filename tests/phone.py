"""A test phone over a real websocket that records everything the server says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from websockets.asyncio.client import ClientConnection, connect

import protocol as p
from protocol import HazardInfo, ObservationMsg, decode, encode
from tests.conftest import jpeg_bytes

T = TypeVar("T")


class Phone:
    """A test client that records everything the server says."""

    def __init__(self, ws: ClientConnection, ready: p.Ready) -> None:
        self.ws = ws
        self.ready = ready
        self.seen: list[tuple[float, p.Message]] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self.seq = 0

    @classmethod
    async def open(cls, server_url: str, token: str, *, resume: str | None = None) -> Phone:
        ws = await connect(server_url, max_size=None)
        await ws.send(encode(p.Hello(protocol=1, token=token, resume=resume)))
        ready = decode(await ws.recv())
        assert isinstance(ready, p.Ready), ready
        return cls(ws, ready)

    async def _read(self) -> None:
        async for raw in self.ws:
            self.seen.append((time.monotonic(), decode(raw)))
            self._new.set()

    async def send(self, msg: p.Message) -> None:
        await self.ws.send(encode(msg))

    async def jpeg(self, data: bytes, width: int, height: int) -> int:
        seq = self.seq
        self.seq += 1
        await self.send(
            p.CameraFrame(
                seq=seq, ts=int(time.time() * 1000), width=width, height=height, payload=data
            )
        )
        return seq

    async def speak(self, pcm: bytes, *, rate: int = 16_000, speed: float = 1.0) -> None:
        """Stream PCM16 as a microphone does: 20 ms chunks, paced at ``speed`` x real time
        (the server drops audio that arrives much faster than it can be spoken)."""
        step = rate // 50 * 2
        started = time.monotonic()
        for n, offset in enumerate(range(0, len(pcm), step)):
            ahead = started + n * 0.02 / speed - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing to the microphone's rate
            await self.send(
                p.AudioChunk(seq=n, ts=n * 20, rate=rate, payload=pcm[offset : offset + step])
            )

    async def frame(self, colour: tuple[int, int, int] = (90, 120, 200)) -> int:
        seq = self.seq
        self.seq += 1
        await self.send(
            p.CameraFrame(
                seq=seq,
                ts=int(time.time() * 1000),
                width=64,
                height=48,
                payload=jpeg_bytes(colour=colour),
            )
        )
        return seq

    async def look(self, timeout: float = 10) -> p.ObservationMsg:
        """Send a frame and wait for the model's look at it: where most tests start."""
        await self.frame()
        msg = await self.wait_for(lambda m: isinstance(m, p.ObservationMsg), timeout)
        assert isinstance(msg, p.ObservationMsg)
        return msg

    async def wait_for(self, pred: Callable[[p.Message], bool], timeout: float = 10) -> p.Message:
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            while index < len(self.seen):
                msg = self.seen[index][1]
                index += 1
                if pred(msg):
                    return msg
            self._new.clear()
            await asyncio.wait_for(self._new.wait(), max(0.01, deadline - time.monotonic()))

    def of(self, cls: type[T]) -> list[T]:
        return [m for _, m in self.seen if isinstance(m, cls)]

    def spoken(self) -> list[tuple[str, str]]:
        return [(m.priority, m.text) for m in self.of(p.SpeechStart)]

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def wait_closed(self, timeout: float = 10) -> None:
        """Until the server has closed the connection (and everything sent was read)."""
        await asyncio.wait_for(asyncio.gather(self._reader, return_exceptions=True), timeout)


def observation(
    *hazards: HazardInfo, signs: list[str] | None = None, scene: str = "", answer: str | None = None
) -> ObservationMsg:
    return ObservationMsg(hazards=list(hazards), signs=signs or [], scene=scene, answer=answer)


def stopped(utterance: str) -> Callable[[p.Message], bool]:
    return lambda m: isinstance(m, p.SpeechStop) and m.utterance == utterance


def observed(seq: int) -> Callable[[p.Message], bool]:
    """The observation about frame ``seq``."""
    return lambda m: isinstance(m, p.ObservationMsg) and m.frame_seq == seq
