"""One worker thread per model: bounded queue, priority, deadline, cancel, supervision.

Model calls block for hundreds of milliseconds and a GPU (or espeak-ng, or
SQLite) runs one job at a time best, so each gets a single thread. The event
loop only submits and awaits:

- ``submit`` never blocks: a full queue raises ``WorkerBusy`` at once.
- Lower ``priority`` runs first (a warning before a description); equal
  priorities run in order of submission.
- A job whose ``deadline`` (``time.monotonic``) passed while it waited is not
  run (``DeadlinePassed``): an answer about an old frame is worse than none.
- Cancelling the awaiting task cancels a job that has not started; a running
  job sees its ``threading.Event`` set (pass ``cancel=``) and may stop early.
- Supervision: a job still running ``stall_s`` after it started is abandoned:
  its caller gets ``WorkerStalled``, a fresh thread serves the queue, and the
  stuck thread (a daemon) is left to finish or hang on its own. Nobody waits
  behind a wedged model.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runtime.errors import DeadlinePassed, JobCancelled, WorkerBusy, WorkerStalled

T = TypeVar("T")
log = logging.getLogger("seealoud.runtime")


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    fn: Callable[[], Any] = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    deadline: float | None = field(compare=False, default=None)
    cancel: threading.Event | None = field(compare=False, default=None)


class Worker:
    """A named thread running submitted callables one at a time; see the module docstring."""

    def __init__(self, name: str, *, max_pending: int = 32, stall_s: float | None = None) -> None:
        self.name = name
        self.max_pending = max_pending
        self.stall_s = stall_s
        self.restarts = 0
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._lock = threading.Condition()
        self._closed = False
        self._generation = 0
        self._running: tuple[int, _Job, float] | None = None  # generation, job, started
        self._start_thread()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._heap)

    @property
    def busy(self) -> bool:
        """Whether a job is running now."""
        return self._running is not None

    async def submit(
        self,
        fn: Callable[[], T],
        *,
        priority: int = 0,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ) -> T:
        """Run ``fn`` on the worker and return its result (or raise its exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(priority, next(self._seq), fn, future, deadline, cancel)
        with self._lock:
            if self._closed:
                raise WorkerBusy(f"{self.name} is shut down")
            if len(self._heap) >= self.max_pending:
                raise WorkerBusy(f"{self.name} has {self.max_pending} jobs waiting")
            heapq.heappush(self._heap, job)
            self._lock.notify()
        watchdog = None
        if self.stall_s is not None:
            watchdog = loop.create_task(self._watch(job))
        try:
            return await future
        except asyncio.CancelledError:
            if cancel is not None:
                cancel.set()
            with self._lock:  # a job nobody waits for gives its place in the queue back
                if job in self._heap:  # (a reading asked for again kept the old one's)
                    self._heap.remove(job)
                    heapq.heapify(self._heap)
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def _watch(self, job: _Job) -> None:
        """Abandon the thread if ``job`` runs past ``stall_s``."""
        assert self.stall_s is not None
        while not job.future.done():
            running = self._running
            if running is not None and running[1] is job:
                overdue = running[2] + self.stall_s - time.monotonic()
                if overdue <= 0:
                    self._abandon(running[0], job)
                    return
                await asyncio.wait({job.future}, timeout=overdue)
            else:
                await asyncio.wait({job.future}, timeout=self.stall_s)

    def _abandon(self, generation: int, job: _Job) -> None:
        with self._lock:
            if self._generation != generation:
                return
            self._generation += 1
            self._running = None
            self.restarts += 1
            if job.cancel is not None:
                job.cancel.set()
            self._start_thread()
        log.error(
            "%s: a job ran past %.1f s; its thread was abandoned and a new one started",
            self.name,
            self.stall_s,
        )
        if not job.future.done():
            job.future.set_exception(WorkerStalled(f"{self.name} stalled past {self.stall_s} s"))

    def _start_thread(self) -> None:
        generation = self._generation
        thread = threading.Thread(
            target=self._run, args=(generation,), name=f"worker-{self.name}", daemon=True
        )
        thread.start()

    def _run(self, generation: int) -> None:
        while True:
            with self._lock:
                while not self._heap and not self._closed and self._generation == generation:
                    self._lock.wait()
                if self._generation != generation or (self._closed and not self._heap):
                    return
                job = heapq.heappop(self._heap)
                if job.future.cancelled():
                    continue
                if job.deadline is not None and time.monotonic() > job.deadline:
                    _settle(job.future, exc=DeadlinePassed("the deadline passed in the queue"))
                    continue
                if job.cancel is not None and job.cancel.is_set():
                    _settle(job.future, exc=JobCancelled("cancelled before it started"))
                    continue
                self._running = (generation, job, time.monotonic())
            try:
                result = job.fn()
            except BaseException as exc:  # delivered to the awaiting coroutine
                outcome: tuple[Any, BaseException | None] = (None, exc)
            else:
                outcome = (result, None)
            with self._lock:
                if self._generation != generation:
                    return  # abandoned meanwhile: the caller was told, the result is void
                self._running = None
            _settle(job.future, result=outcome[0], exc=outcome[1])

    def close(self) -> None:
        """Run what is queued, then let the thread end."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None
) -> None:
    def apply() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop closed before the result arrived
        future.get_loop().call_soon_threadsafe(apply)


class WorkerPool:
    """A few ``Worker`` threads for short CPU-bound jobs that may run side by side
    (the change detector of many sessions): each job goes to the least loaded
    worker, with the same bound, priority, deadline and stall limit as one ``Worker``."""

    def __init__(
        self, name: str, *, size: int, max_pending: int = 64, stall_s: float | None = None
    ) -> None:
        self.name = name
        self.workers = [
            Worker(f"{name}-{i}", max_pending=max_pending, stall_s=stall_s)
            for i in range(max(1, size))
        ]

    async def submit(
        self,
        fn: Callable[[], T],
        *,
        priority: int = 0,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ) -> T:
        """Run ``fn`` on the least loaded worker (``WorkerBusy`` when all are full)."""
        worker = min(self.workers, key=lambda w: w.pending + w.busy)
        return await worker.submit(fn, priority=priority, deadline=deadline, cancel=cancel)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
