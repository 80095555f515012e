"""Timestamped results for other programs: one ``WatchEvent`` per thing the server said.

``seealoud watch --jsonl`` prints each as one JSON object per line, always with
the same keys (``null`` where a key does not apply), so a consumer can read
them without knowing every message type:

    {"t": 3.412, "time": "2026-01-05T10:31:02.118Z", "event": "observation",
     "frame_seq": 31, "frame_age_ms": 412, "lane": null, "text": null,
     "hazards": [{"label": "chair", "direction": "ahead", "distance_m": 1.0,
     "urgency": "normal"}], "signs": [], "scene": "A hallway.", "answer": null,
     "reason": "new-content", "latency_ms": 380, "partial": false}

``event`` is ``observation`` (what the model saw), ``speech`` (what is spoken:
``lane`` is ``hazard``, ``answer``, ``sign`` or ``scene``), ``transcript``
(what the server heard) or ``error``. ``frame_age_ms`` is the time from the
frame's capture to the observation's arrival: the delay a walking user lives with.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from protocol import Error as ErrorMsg
from protocol import ObservationMsg, SpeechStart, TranscriptMsg


@dataclass(kw_only=True)
class WatchEvent:
    """One result, as printed by ``--jsonl`` (see the module docstring for the keys)."""

    t: float
    time: str
    event: str
    frame_seq: int | None = None
    frame_age_ms: int | None = None
    lane: str | None = None
    text: str | None = None
    hazards: list[dict[str, Any]] = field(default_factory=list)
    signs: list[str] = field(default_factory=list)
    scene: str | None = None
    answer: str | None = None
    reason: str | None = None
    latency_ms: int | None = None
    partial: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)


def to_event(
    message: object, *, at: float, captured_ms: int | None = None, now_ms: int | None = None
) -> WatchEvent | None:
    """The event for one server message, or None for messages that are not results
    (audio chunks, pongs, settings). ``captured_ms`` is the capture time of the frame
    an observation is about, when the sender still knows it."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    stamp = datetime.fromtimestamp(now / 1000, UTC).isoformat(timespec="milliseconds")
    base: dict[str, Any] = {"t": round(at, 3), "time": stamp.replace("+00:00", "Z")}
    if isinstance(message, ObservationMsg):
        return WatchEvent(
            **base,
            event="observation",
            frame_seq=message.frame_seq,
            frame_age_ms=None if captured_ms is None else max(0, now - captured_ms),
            hazards=[dataclasses.asdict(h) for h in message.hazards],
            signs=list(message.signs),
            scene=message.scene or None,
            answer=message.answer,
            reason=message.reason or None,
            latency_ms=message.latency_ms,
            partial=message.partial,
        )
    if isinstance(message, SpeechStart):
        return WatchEvent(**base, event="speech", lane=message.priority, text=message.text)
    if isinstance(message, TranscriptMsg):
        return WatchEvent(**base, event="transcript", text=message.text)
    if isinstance(message, ErrorMsg):
        return WatchEvent(**base, event="error", text=f"{message.code}: {message.message}")
    return None
