"""Models the server loads in the background, with their status for ``/readyz``.

The server answers at once while models load; each service says whether it
is ``loading``, ``ready`` or ``failed`` (with the reason and the fix). Loading
runs on a daemon thread, so a server shut down mid-load does not wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from vision.worker import run_in_daemon_thread

log = logging.getLogger("seealoud.services")

T = TypeVar("T")


class Service(Generic[T]):
    """A model (TTS, ASR) and its loading state."""

    def __init__(self, name: str, model: T, load: Callable[[], None]) -> None:
        self.name = name
        self.model = model
        self._load = load
        self.status = "not-loaded"
        self.failure: str | None = None
        self.loaded = asyncio.Event()

    def ready_model(self) -> T | None:
        return self.model if self.status == "ready" else None

    async def load(self) -> None:
        self.status = "loading"
        try:
            await run_in_daemon_thread(self._load, name=f"load-{self.name}")
        except Exception as exc:
            self.status, self.failure = "failed", str(exc)
            log.error("%s unavailable: %s", self.name, exc)
        else:
            self.status = "ready"
            log.info("%s ready", self.name)
        finally:
            self.loaded.set()

    def reason(self) -> str:
        if self.status == "failed":
            return f"{self.name} failed to load: {self.failure}"
        return f"{self.name} is {self.status}"
