"""The vision model's worker thread: the shared runtime's ``Worker``.

Kept as a module so backends keep one import; the machinery (bounded queue,
priority, deadline, cancel, supervision) lives in ``runtime/worker.py``.

Besides each backend's model worker, one process-wide ``image_worker`` decodes
and re-encodes frames for the model (a few milliseconds each with reduced-size
decoding, too long for the event loop, too short to share the GPU's queue):
that is the runtime's worker-per-job-kind rule in place of ``asyncio.to_thread``.
"""

from __future__ import annotations

import threading

from runtime import DeadlinePassed
from runtime import Worker as ModelWorker

__all__ = ["DeadlinePassed", "ModelWorker", "image_worker"]

_images: ModelWorker | None = None
_images_lock = threading.Lock()


def image_worker() -> ModelWorker:
    """The process's one frame decode/encode worker, started on first use.

    Bounded like a model's queue (a session has at most one frame in analysis,
    so 64 waiting is far past normal), supervised at 10 s: a decode that takes
    that long is a bug or a bomb the pixel cap missed, and nobody waits behind it.
    """
    global _images
    with _images_lock:
        if _images is None:
            _images = ModelWorker("vision-images", max_pending=64, stall_s=10.0)
        return _images
