"""The analysis stage: what the session asks of the vision engine.

A session hands an ``AnalysisRequest`` (the newest frame, maybe a question,
and why it asks) to an ``Analyzer`` and gets an ``ObservationMsg`` back, or
``None`` when there is nothing to say. Implementations run their model work
off the event loop (one worker per model); ``analyze`` must only await.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol import ObservationMsg
from server.slot import PendingFrame


@dataclass(kw_only=True, repr=False)
class AnalysisRequest:
    """One unit of model work for one session.

    Attributes:
        frame: The frame to look at (the newest one when asked).
        question: The user's question, or ``None`` for a scene check.
        reason: Why the model is called: ``new-content``, ``approach``,
            ``scene-cut``, ``heartbeat`` or ``question``.
        session: Session id, for logs.
        language: Language the answer should be in (BCP-47, e.g. ``en``).
    """

    frame: PendingFrame
    question: str | None = None
    reason: str = "new-content"
    session: str = ""
    language: str = "en"

    def __repr__(self) -> str:
        q = "" if self.question is None else f", question={len(self.question)} chars"
        return f"AnalysisRequest(reason={self.reason!r}, frame={self.frame!r}{q})"


class Analyzer(Protocol):
    """What the server needs from a vision engine."""

    name: str

    async def analyze(self, request: AnalysisRequest) -> ObservationMsg | None:
        """Look at one frame; may raise, and the session reports ``model-failed``."""
        ...
