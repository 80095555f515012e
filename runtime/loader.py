"""Background loading of a model, with the state ``/readyz`` and sessions report.

The server answers at once while models load. A ``Loader`` runs one blocking
``load`` on a daemon thread (a server shut down mid-load does not wait for a
17 GB read) and keeps its state: ``not-loaded`` -> ``loading`` -> ``ready`` or
``failed`` with the reason. Listeners registered with ``on_change`` hear every
state change on the event loop (the server forwards them to live sessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("seealoud.runtime")


async def run_in_daemon_thread(fn: Callable[[], Any], *, name: str) -> Any:
    """Run a blocking ``fn`` in a daemon thread and await its result.

    Unlike ``asyncio.to_thread``, a server shutting down mid-load does not wait
    for it: the default executor would hold the process until the load finished.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:
            outcome: tuple[Any, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done


class Loader:
    """The loading state of one model; see the module docstring."""

    def __init__(self, name: str, load: Callable[[], None]) -> None:
        self.name = name
        self._load = load
        self.status = "not-loaded"
        self.failure: str | None = None
        self.loaded = asyncio.Event()
        self._listeners: list[Callable[[Loader], None]] = []

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def on_change(self, listener: Callable[[Loader], None]) -> None:
        """Call ``listener`` (on the event loop) whenever the status changes."""
        self._listeners.append(listener)

    async def load(self) -> None:
        self._set("loading")
        try:
            await run_in_daemon_thread(self._load, name=f"load-{self.name}")
        except Exception as exc:
            self.failure = str(exc) or type(exc).__name__
            self._set("failed")
            log.error("%s unavailable: %s", self.name, self.failure)
        else:
            self._set("ready")
            log.info("%s ready", self.name)
        finally:
            self.loaded.set()

    def reason(self) -> str:
        """Operator text: why it is not ready."""
        if self.status == "failed":
            return f"{self.name} failed to load: {self.failure}"
        return f"{self.name} is {self.status}"

    def _set(self, status: str) -> None:
        self.status = status
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:  # one bad listener must not stop the load's bookkeeping
                log.exception("a %s status listener failed", self.name)
