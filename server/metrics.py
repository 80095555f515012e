"""Counters and latency samples the server exposes at ``/metrics``.

Only counts and durations: never user names, tokens or media.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field


class LatencySamples:
    """The most recent ``capacity`` durations (seconds), with percentiles."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._samples: deque[float] = deque(maxlen=capacity)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)
        self.count += 1

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the kept samples, or None if empty."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    def summary_ms(self) -> dict[str, float | int | None]:
        p50, p95, p99 = (self.percentile(q) for q in (0.5, 0.95, 0.99))
        return {
            "count": self.count,
            "p50_ms": None if p50 is None else round(p50 * 1000, 4),
            "p95_ms": None if p95 is None else round(p95 * 1000, 4),
            "p99_ms": None if p99 is None else round(p99 * 1000, 4),
        }


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class ServerMetrics:
    """Process-wide counters, summed over all sessions."""

    sessions_active: int = 0
    sessions_total: int = 0
    auth_failures: int = 0
    frames_received: int = 0
    frames_dropped: int = 0
    frames_rejected: int = 0
    detector_fires: int = 0
    model_frames_dropped: int = 0
    bad_messages: int = 0
    handler_crashes: int = 0
    analyses: int = 0
    rate_limited: int = 0
    ingest: LatencySamples = field(default_factory=LatencySamples)
    errors: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def audio_dropped(self, reason: str, ms: float) -> None:
        """Audio not listened to (faster than real time, speech budget, busy decoder)."""
        key = f"audio-dropped:{reason}"
        self.errors[key] = self.errors.get(key, 0) + 1

    def detector_decision(self, reason: str) -> None:
        self.decisions[reason] = self.decisions.get(reason, 0) + 1

    def model_latency(self, backend: str, seconds: float) -> None:
        """One model call's latency (interim: counted only)."""

    def render(self) -> bytes:
        import json

        return json.dumps(self.snapshot()).encode()

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready view for ``/metrics`` and the benchmarks."""
        return {
            "sessions_active": self.sessions_active,
            "sessions_total": self.sessions_total,
            "auth_failures": self.auth_failures,
            "frames_received": self.frames_received,
            "frames_dropped": self.frames_dropped,
            "frames_rejected": self.frames_rejected,
            "detector_fires": self.detector_fires,
            "model_frames_dropped": self.model_frames_dropped,
            "bad_messages": self.bad_messages,
            "handler_crashes": self.handler_crashes,
            "analyses": self.analyses,
            "ingest": self.ingest.summary_ms(),
            "rss_bytes": rss_bytes(),
        }
