"""Test doubles, named as such: stand-ins for the vision engine in server tests.

The server tests exercise sockets, scheduling and error paths; the real
vision engine is tested on its own with a real tiny model. These doubles let a
test decide exactly when an analysis finishes (by an ``asyncio.Event``, never
by sleeping) and what it returns.
"""

from __future__ import annotations

import asyncio

from protocol import HazardInfo, ObservationMsg
from server.analysis import AnalysisRequest


class GatedAnalyzerDouble:
    """Test double: records requests and finishes each one only when released."""

    name = "gated-double"

    def __init__(self) -> None:
        self.requests: list[AnalysisRequest] = []
        self.started = asyncio.Event()
        self._release = asyncio.Event()

    def release(self) -> None:
        """Let the current (and every later) analysis finish."""
        self._release.set()

    def hold(self) -> None:
        self._release.clear()

    async def analyze(self, request: AnalysisRequest) -> ObservationMsg | None:
        self.requests.append(request)
        self.started.set()
        await self._release.wait()
        return ObservationMsg(
            frame_seq=request.frame.frame.seq,
            reason=request.reason,
            hazards=[HazardInfo(label="chair", direction="ahead", distance_m=1.0)],
            answer=f"answer to {request.question}" if request.question else None,
        )


class FailingAnalyzerDouble:
    """Test double: a model that raises on every call (a dead GPU, say)."""

    name = "failing-double"

    def __init__(self) -> None:
        self.calls = 0

    async def analyze(self, request: AnalysisRequest) -> ObservationMsg | None:
        self.calls += 1
        raise RuntimeError("CUDA error: device lost")


class BuggyAnalyzerDouble:
    """Test double: returns something that is not a message, so sending it crashes."""

    name = "buggy-double"

    async def analyze(self, request: AnalysisRequest) -> ObservationMsg | None:
        return "not an observation"  # type: ignore[return-value]


class ScriptedAnalyzerDouble:
    """Test double: returns the given observations, in order, each after the given delay
    (a stand-in for model time), and records the requests. The last one repeats."""

    name = "scripted-double"

    def __init__(self, script: list[tuple[ObservationMsg | None, float]]) -> None:
        self.script = list(script)
        self.requests: list[AnalysisRequest] = []

    async def analyze(self, request: AnalysisRequest) -> ObservationMsg | None:
        self.requests.append(request)
        template, delay = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if delay:
            await asyncio.sleep(delay)  # simulated model latency, not synchronisation
        if template is None:
            return None
        obs = ObservationMsg(**{**vars(template), "id": None})
        obs.frame_seq = request.frame.frame.seq
        obs.reason = request.reason
        return obs
