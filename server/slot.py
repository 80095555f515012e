"""The newest-frame-wins slot between the socket and the model.

The phone sends 5-15 frames a second; the model takes hundreds of ms. Queueing
frames would make every answer about the past, so each session holds exactly
one pending frame: a new frame replaces the waiting one (counted as dropped),
and the reader always gets the newest. ``put`` never blocks, so slow analysis
can never back up the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from protocol import CameraFrame

log = logging.getLogger("seealoud.slot")


@dataclass(kw_only=True, repr=False)
class PendingFrame:
    """A validated frame, when the server received it (``time.monotonic``) and why it
    goes to the model."""

    frame: CameraFrame
    received_at: float = field(default_factory=time.monotonic)
    reason: str = "new-content"
    """Why the change detector passed it to the model."""

    def __repr__(self) -> str:
        return f"PendingFrame(seq={self.frame.seq}, bytes={len(self.frame.payload)})"


class FrameSlot:
    """One pending frame per session; see the module docstring."""

    def __init__(self) -> None:
        self._pending: PendingFrame | None = None
        self.latest: PendingFrame | None = None
        """The newest frame received, taken or not (questions are asked about it)."""
        self.received = 0
        self.dropped = 0

    def put(self, frame: PendingFrame) -> None:
        """Offer a frame; replaces (and counts) any frame still waiting."""
        if self._pending is not None:
            self.dropped += 1
        self._pending = frame
        self.latest = frame
        self.received += 1

    def pending(self) -> bool:
        """Whether a frame is waiting to be taken."""
        return self._pending is not None

    def take_nowait(self) -> PendingFrame | None:
        """The waiting frame, or ``None``; empties the slot."""
        frame, self._pending = self._pending, None
        return frame


class NewestTask:
    """Slow work about frames (reading the signs in one), one at a time, newest wins:
    work offered while one runs replaces any that waits, as frames do in the slot.
    A crash is logged with its traceback and ends only that piece of work."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None
        self._next: Callable[[], Awaitable[None]] | None = None
        self._closed = False

    def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Start ``work()`` now, or after the running one (replacing any waiting)."""
        if self._closed:
            return
        if self._task is not None and not self._task.done():
            self._next = work
            return
        self._next = None
        self._task = asyncio.create_task(_await(work), name=self.name)
        self._task.add_done_callback(self._finished)

    def close(self) -> None:
        self._closed = True
        self._next = None
        if self._task is not None:
            self._task.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s crashed", self.name, exc_info=task.exception())
        if self._next is not None:
            work, self._next = self._next, None
            self.run(work)


async def _await(work: Callable[[], Awaitable[None]]) -> None:
    await work()
