"""The analysis stage: what the session asks of the vision engine.

A session hands an ``AnalysisRequest`` (the newest frame, maybe a question,
and why it asks) to an ``Analyzer`` and gets an ``ObservationMsg`` back, or
``None`` when there is nothing to say. Implementations run their model work
off the event loop (one worker per model); ``analyze`` must only await.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from protocol import HazardInfo, ObservationMsg
from server.config import ServerConfig
from server.slot import PendingFrame
from vision.engine import VisionEngine
from vision.observation import Hazard


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
        memory: Recent scene lines, oldest first, for questions about change.
        on_hazard: Called with each hazard as soon as the model has finished
            writing it, before the whole answer is done.
    """

    frame: PendingFrame
    question: str | None = None
    reason: str = "new-content"
    session: str = ""
    language: str = "en"
    memory: list[str] = field(default_factory=list)
    on_hazard: Callable[[HazardInfo], None] | None = None

    def __repr__(self) -> str:
        q = "" if self.question is None else f", question={len(self.question)} chars"
        return f"AnalysisRequest(reason={self.reason!r}, frame={self.frame!r}{q})"


class Analyzer(Protocol):
    """What the server needs from a vision engine.

    An analyzer may also have a ``ready`` attribute; while it is false, frames
    are not sent to it and questions are answered with ``capability-unavailable``.
    """

    name: str

    async def analyze(self, request: AnalysisRequest) -> ObservationMsg | None:
        """Look at one frame; may raise, and the session reports ``model-failed``."""
        ...


class VisionAnalyzer:
    """The vision engine as the server's ``Analyzer``: frame and question in, message out."""

    def __init__(self, engine: VisionEngine) -> None:
        self.engine = engine
        self.name = engine.backend.name

    @property
    def ready(self) -> bool:
        """False while the model loads or after it failed to load."""
        return self.engine.ready

    async def analyze(self, request: AnalysisRequest) -> ObservationMsg | None:
        on_hazard = None
        if request.on_hazard is not None:
            forward = request.on_hazard

            def on_hazard(h: Hazard) -> None:
                forward(_hazard_info(h))

        result = await self.engine.analyze(
            request.frame.frame.payload,
            question=request.question,
            language=request.language,
            memory=request.memory or None,
            on_hazard=on_hazard,
        )
        obs = result.observation
        if obs.empty and request.question is None:
            return None  # nothing worth saying about this frame
        return ObservationMsg(
            frame_seq=request.frame.frame.seq,
            reason=request.reason,
            hazards=[_hazard_info(h) for h in obs.hazards],
            signs=list(obs.signs),
            scene=obs.scene,
            answer=obs.answer,
            partial=obs.partial,
            latency_ms=round(result.total_ms),
        )


def _hazard_info(h: Hazard) -> HazardInfo:
    return HazardInfo(
        label=h.label, direction=h.direction, distance_m=h.distance_m, urgency=h.urgency
    )


def build_engine(config: ServerConfig) -> VisionEngine | None:
    """The vision engine the configuration asks for (not loaded yet), or None."""
    from vision.vlm import (
        GenerationOptions,
        HttpOptions,
        OpenAIBackend,
        TransformersBackend,
        TransformersOptions,
        VlmBackend,
    )

    options = GenerationOptions(
        max_new_tokens=config.vlm_max_new_tokens,
        deadline_s=config.vlm_deadline_s,
        long_side=config.vlm_long_side,
    )
    backend: VlmBackend
    if config.vision_backend == "none":
        return None
    if config.vision_backend == "openai":
        assert config.vlm_url is not None
        backend = OpenAIBackend(HttpOptions(base_url=config.vlm_url, model=config.model))
    else:
        backend = TransformersBackend(
            TransformersOptions(
                model=config.model, device=config.device, quantization=config.quantization
            )
        )
    return VisionEngine(backend, options=options)
