"""Where frames come from: a recording (file, image, folder) or a live source
(a camera index such as ``0``, or a stream URL: RTSP, HTTP MJPEG, anything OpenCV's
FFmpeg opens).

A recording is decoded up front and replayed at its own frame rate. A live source
is read as it comes, on a reader thread that keeps only the newest frame (a phone
does the same: a slow network or server never makes the camera fall behind), so
what is sent is paced by the source itself, in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from seealoud_client.frames import FrameSourceError, require_cv2

_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_CAMERA = re.compile(r"\d{1,3}")


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """A parsed ``SOURCE`` argument.

    Attributes:
        kind: ``recording``, ``camera`` or ``stream``.
        target: The path, camera index (as text) or URL.
    """

    kind: str
    target: str

    @property
    def live(self) -> bool:
        return self.kind != "recording"

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """``0`` is a camera, ``rtsp://...``/``http://...`` a stream, anything else a path."""
        if _CAMERA.fullmatch(text) and not Path(text).exists():
            return cls(kind="camera", target=text)
        if _URL.fullmatch(text):
            return cls(kind="stream", target=text)
        return cls(kind="recording", target=text)

    def describe(self) -> str:
        """For logs: a stream URL without any credentials it carries."""
        if self.kind == "stream":
            return re.sub(r"//[^/@]*@", "//***@", self.target)
        if self.kind == "camera":
            return f"camera {self.target}"
        return self.target


@dataclass(kw_only=True, repr=False)
class LiveFrame:
    """The newest frame of a live source and when it was grabbed (wall clock, ms)."""

    image: Image.Image
    captured_ms: int
    index: int

    def __repr__(self) -> str:
        return f"LiveFrame(#{self.index}, {self.image.width}x{self.image.height})"


class LiveSource:
    """A camera or stream read on its own thread; ``next_frame`` waits for a newer one.

    Frames the consumer did not take in time are dropped (counted in ``dropped``),
    never queued. ``close`` stops the thread and releases the device.

    Both waits are bounded, through OpenCV's own timeouts (FFmpeg's default is
    30 s each): a stream host that accepts the connection and then says nothing
    fails the open after ``open_timeout_s``, and a source that goes quiet
    mid-stream ends after ``read_timeout_s`` (``next_frame`` returns None).
    """

    def __init__(
        self, spec: SourceSpec, *, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0
    ) -> None:
        cv2 = require_cv2()
        target: int | str = int(spec.target) if spec.kind == "camera" else spec.target
        self.spec = spec
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(read_timeout_s * 1000),
        ]
        # Streams through FFmpeg (it honours both timeouts); a camera through whatever
        # backend the platform has (V4L2, AVFoundation... take what they support).
        backend = cv2.CAP_FFMPEG if spec.kind == "stream" else cv2.CAP_ANY
        self._cap: Any = cv2.VideoCapture(target, backend, params)
        if not self._cap.isOpened():
            self._cap.release()
            raise FrameSourceError(
                f"cannot open {spec.describe()} (no answer within {open_timeout_s:g} s, "
                "or not a video source)"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 240 else None
        self.dropped = 0
        self.frames = 0
        self._newest: LiveFrame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._read, name="live-source", daemon=True)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._thread.start()

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                ok, bgr = self._cap.read()  # blocks until the source has the next frame
                if not ok:
                    break
                frame = LiveFrame(
                    image=Image.fromarray(bgr[:, :, ::-1]),
                    captured_ms=int(time.time() * 1000),
                    index=self.frames,
                )
                with self._lock:
                    if self._newest is not None:
                        self.dropped += 1
                    self._newest = frame
                    self.frames += 1
                self._notify()
        finally:
            self._ended = True
            self._notify()

    def _notify(self) -> None:
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._wake.set)

    async def next_frame(self) -> LiveFrame | None:
        """The newest frame not yet taken, waiting for one; None when the source ended."""
        assert self._wake is not None, "start() first"
        while True:
            with self._lock:
                frame, self._newest = self._newest, None
            if frame is not None:
                return frame
            if self._ended:
                return None
            self._wake.clear()
            with self._lock:
                if self._newest is not None or self._ended:
                    continue
            await self._wake.wait()

    async def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 5)
        if not self._thread.is_alive():  # never release under a read still in progress
            self._cap.release()
