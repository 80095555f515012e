"""One worker thread per model, with a bounded queue, bridged to asyncio.

Model calls block for hundreds of milliseconds and a GPU runs one at a time
best, so each model gets a single thread. Requests carry a deadline: one that
waited in the queue past it is skipped, not run, because an answer about an
old frame is worse than none. ``submit`` never blocks the event loop: when the
queue is full it raises ``WorkerBusy`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from vision.errors import WorkerBusy

T = TypeVar("T")
log = logging.getLogger("seealoud.worker")


class DeadlinePassed(Exception):
    """The request's deadline passed while it waited in the queue."""


class ModelWorker:
    """A named thread that runs submitted callables one at a time."""

    def __init__(self, name: str, *, max_pending: int = 32) -> None:
        self.name = name
        self._queue: queue.Queue[tuple[Callable[[], Any], asyncio.Future[Any], float | None] | None]
        self._queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name=f"model-{name}", daemon=True)
        self._thread.start()
        self.skipped = 0

    async def submit(self, fn: Callable[[], T], *, deadline: float | None = None) -> T:
        """Run ``fn`` on the worker; ``deadline`` is a ``time.monotonic`` instant."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        try:
            self._queue.put_nowait((fn, future, deadline))
        except queue.Full:
            raise WorkerBusy(f"{self.name} has {self._queue.maxsize} requests waiting") from None
        return await future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future, deadline = item
            if future.cancelled():
                continue
            loop = future.get_loop()
            if deadline is not None and time.monotonic() > deadline:
                self.skipped += 1
                _settle(loop, future, exc=DeadlinePassed("deadline passed in the queue"))
                continue
            try:
                result = fn()
            except BaseException as exc:  # delivered to the awaiting coroutine
                _settle(loop, future, exc=exc)
            else:
                _settle(loop, future, result=result)

    def close(self) -> None:
        """Stop after the requests already queued."""
        self._queue.put(None)


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    *,
    result: Any = None,
    exc: BaseException | None = None,
) -> None:
    def apply() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(apply)
    except RuntimeError:
        log.debug("event loop closed before a %s result arrived", "model")


async def run_in_daemon_thread(fn: Callable[[], Any], *, name: str) -> None:
    """Run a blocking ``fn`` (a model load) in a daemon thread and await it.

    Unlike ``asyncio.to_thread``, a server shutting down mid-load does not wait for
    it: the default executor would hold the process until a 17 GB load finished.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            _settle(loop, done, exc=exc)
        else:
            _settle(loop, done, result=None)

    threading.Thread(target=run, name=name, daemon=True).start()
    await done
