"""The newest-frame-wins slot between the socket and the model.

The phone sends 5-15 frames a second; the model takes hundreds of ms. Queueing
frames would make every answer about the past, so each session holds exactly
one pending frame: a new frame replaces the waiting one (counted as dropped),
and the reader always gets the newest. ``put`` never blocks, so slow analysis
can never back up the socket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from protocol import CameraFrame


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
