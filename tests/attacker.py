"""A hostile client in its own process (as on a real network): scrapes ``/metrics``,
sends decompression bombs and lying headers, guesses tokens and holds a connection it
never reads, all at once, until its stdin closes. Loopback only, bounded in time.

    python -m tests.attacker PORT TOKEN CAREGIVER_TOKEN SECONDS
"""

from __future__ import annotations

import asyncio
import http.client
import sys
import time

from websockets.asyncio.client import connect

import protocol as p
from protocol import encode
from tests.conftest import jpeg_bytes


def with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its start-of-frame claiming another size (a decompression bomb
    when the size is huge: a few hundred bytes that decode to gigabytes)."""
    data = bytearray(jpeg)
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 7] = height.to_bytes(2, "big")
    data[i + 7 : i + 9] = width.to_bytes(2, "big")
    return bytes(data)


def smuggled_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with a second, false start-of-frame (``width`` x ``height``) that a
    scan jumping over ``0xFF 0x00`` with a made-up length lands on, inside an APP1
    segment the decoder skips; the decoder itself skips the ``0xFF 0x00`` as junk and
    reads the real frame header (found by an attacker pass: 13000x13000 passed the
    pixel cap as 640x480)."""
    head = jpeg[2:]
    i = 0
    while True:  # the first segment boundary after the real frame header
        marker, length = head[i + 1], int.from_bytes(head[i + 2 : i + 4], "big")
        i += 2 + length
        if marker in (0xC0, 0xC1, 0xC2):
            break
    before, after = head[:i], head[i:]
    fake = b"\xff\xc0\x00\x0b\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big")
    fake += b"\x01\x01\x11\x00"
    jump = 2 + len(before) + 4  # the length counts itself, the real headers, APP1's 4
    app1 = b"\xff\xe1" + (2 + len(fake)).to_bytes(2, "big") + fake
    return b"\xff\xd8\xff\x00" + jump.to_bytes(2, "big") + before + app1 + after


async def main(port: int, token: str, caregiver: str, seconds: float) -> None:
    url = f"ws://127.0.0.1:{port}/ws"
    until = time.monotonic() + seconds

    def scrape_once() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        conn.getresponse().read()
        conn.close()

    async def scrape() -> None:
        while time.monotonic() < until:
            await asyncio.to_thread(scrape_once)

    async def bomber() -> None:
        bomb = with_size(jpeg_bytes(64, 48), 13000, 13000)
        liar = with_size(jpeg_bytes(64, 48), 8000, 8000)
        async with connect(url, max_size=None) as ws:
            await ws.send(encode(p.Hello(protocol=1, token=token)))
            await ws.recv()
            n = 0
            while time.monotonic() < until:
                for payload, w, h in ((bomb, 13000, 13000), (liar, 64, 48)):
                    frame = p.CameraFrame(seq=n, ts=n, width=w, height=h, payload=payload)
                    await ws.send(encode(frame))
                    n += 1
                await asyncio.sleep(0.002)  # ~1,000 frames a second

    async def guesser() -> None:
        while time.monotonic() < until:
            try:
                async with connect(url) as ws:
                    await ws.send(encode(p.Hello(protocol=1, token="sa_1_" + "x" * 43)))
                    await ws.recv()
            except Exception:  # refused or closed: try again, as an attacker would
                await asyncio.sleep(0.01)

    stuck = await connect(url, max_size=None, compression=None)
    await stuck.send(encode(p.Hello(protocol=1, token=caregiver)))
    await stuck.recv()
    stuck.transport.pause_reading()
    for n in range(50):
        await stuck.send(encode(p.Ping(t=n, id="x" * 60_000)))
    print("attacking", flush=True)
    tasks = [scrape() for _ in range(8)] + [bomber(), bomber(), guesser()]
    await asyncio.gather(*tasks, return_exceptions=True)
    stuck.transport.abort()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])))


def many_scans(jpeg: bytes, copies: int) -> bytes:
    """A progressive JPEG with its last scan repeated ``copies`` times: a small file whose
    decode costs seconds (every scan is another pass over every coefficient)."""
    last = jpeg.rindex(b"\xff\xda")
    end = jpeg.rindex(b"\xff\xd9")
    return jpeg[:last] + jpeg[last:end] * copies + jpeg[end:]
