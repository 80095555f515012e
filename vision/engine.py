"""The vision engine: one frame (+ question, + recent context) in, an ``Observation`` out.

Owns a backend, loads it in the background (the server answers at once while
the 8B weights load), and turns streamed model text into observations. As the
text streams, each hazard is handed to ``on_hazard`` the moment its JSON
object closes, so the first warning can be spoken before generation ends.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from vision.errors import BackendError, ModelUnavailable
from vision.observation import Hazard, Observation, complete_hazards, parse_model_output
from vision.prompts import PROMPT_VERSION, build_prompt
from vision.upright import upright
from vision.vlm import Generation, GenerationOptions, VlmBackend
from vision.weights import LoadProgress
from vision.worker import DeadlinePassed, image_worker

log = logging.getLogger("seealoud.vision")


@dataclass(kw_only=True)
class Analysis:
    """An observation and the model call behind it."""

    observation: Observation
    generation: Generation = field(default_factory=Generation)
    total_ms: float = 0.0


class VisionEngine:
    """Frame in, observation out; see the module docstring.

    Loading state is not kept here: the server's ``runtime.Loader`` runs
    ``load_blocking`` on a daemon thread and owns status and failure (for
    ``/readyz`` and the sessions); the backend's ``progress`` says where a load
    stands, and ``ready`` reads it.
    """

    def __init__(self, backend: VlmBackend, *, options: GenerationOptions | None = None) -> None:
        self.backend = backend
        self.options = options or GenerationOptions()

    @property
    def ready(self) -> bool:
        """The backend finished loading (its progress says ``ready``)."""
        return self.backend.progress.stage == "ready"

    @property
    def progress(self) -> LoadProgress:
        """Where loading stands (stage, model, bytes downloaded of total), for ``/readyz``;
        safe to read from the event loop while the loader thread writes it."""
        return self.backend.progress

    def load_blocking(self) -> None:
        """Load the backend on the calling thread (a ``runtime.Loader`` runs it on a daemon
        thread); raises ``ModelUnavailable`` with the fix, a loader bug included."""
        try:
            self.backend.load()
        except ModelUnavailable:
            raise
        except Exception as exc:  # a loader bug: report it as the reason, keep serving
            raise ModelUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def analyze(
        self,
        jpeg: bytes,
        *,
        question: str | None = None,
        language: str = "en",
        memory: list[str] | None = None,
        cancel: threading.Event | None = None,
        on_hazard: Callable[[Hazard], None] | None = None,
        options: GenerationOptions | None = None,
    ) -> Analysis:
        """Look at one JPEG. Raises ``ModelUnavailable`` or ``BackendError``."""
        if not self.ready:
            raise ModelUnavailable(f"the vision model is {self.backend.progress.stage}")
        started = time.perf_counter()
        opts = options or self.options
        try:
            image = await image_worker().submit(
                lambda: _decode(jpeg, opts.long_side),
                deadline=time.monotonic() + opts.deadline_s,
            )
        except DeadlinePassed:
            obs = Observation(empty_reason="timeout", partial=True)
            return Analysis(observation=obs, total_ms=(time.perf_counter() - started) * 1000)
        prompt = build_prompt(question=question, language=language, memory=memory)
        streamed: list[str] = []
        announced = 0

        def on_text(delta: str) -> None:
            nonlocal announced
            streamed.append(delta)
            if on_hazard is None:
                return
            found = complete_hazards("".join(streamed))
            for hazard in found[announced:]:
                on_hazard(hazard)
            announced = len(found)

        try:
            generation = await self.backend.generate(
                image, prompt, options=opts, cancel=cancel or threading.Event(), on_text=on_text
            )
        except DeadlinePassed:
            obs = Observation(empty_reason="timeout", partial=True)
            return Analysis(observation=obs, total_ms=(time.perf_counter() - started) * 1000)
        observation = parse_model_output(
            generation.text, question=question is not None, partial=generation.partial
        )
        if observation.empty and generation.stop == "deadline" and not generation.text.strip():
            observation.empty_reason = "timeout"
        total = (time.perf_counter() - started) * 1000
        log.debug(
            "analysis: %r in %.0f ms (%s, %d image tokens, stop=%s)",
            observation,
            total,
            PROMPT_VERSION,
            generation.image_tokens,
            generation.stop,
        )
        return Analysis(observation=observation, generation=generation, total_ms=total)


def _decode(jpeg: bytes, long_side: int) -> Image.Image:
    """Decode at no more than about twice the size the model gets.

    ``draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale (the largest that is
    still at least ``long_side`` on the long side): a 12-megapixel phone photo
    costs a fraction of a full decode and of its memory, and the backend's
    ``resize_long_side`` does the last step.
    """
    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            w, h = img.size
            scale = min(1.0, long_side / max(1, w, h))
            img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
            return upright(img, img.convert("RGB"))
    except Exception as exc:  # Pillow raises many types on corrupt data
        raise BackendError(f"the frame is not a decodable image ({type(exc).__name__})") from exc
