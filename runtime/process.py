"""One supervised child process for an engine a thread cannot rescue (espeak-ng).

``Worker`` abandons a stuck thread and starts another, which helps only when the
next job does not need what the stuck one holds. espeak-ng keeps process-global
state and can hang inside C, so a fresh thread in the same process would wait on
the same wedged library. ``ProcessWorker`` runs such an engine in a child process
(a fresh interpreter, no inherited locks, and unlike ``multiprocessing`` spawn it
never re-imports the parent's ``__main__``) that serves one job at a time, and
kills it when it stops answering:

- ``submit`` never blocks: a full queue raises ``WorkerBusy`` (nothing queued).
- Lower ``priority`` runs first; equal priorities in order of submission.
- A job streams any number of messages back (``on_message``, called on the
  dispatcher thread) and ends with exactly one ``on_done(error)``: ``None``, or
  ``JobCancelled``, ``WorkerStalled`` or ``RuntimeWorkError`` with the child's text.
- ``stop(ticket)`` asks the child to stop that job at its next check: a shared
  integer the child reads, no round trip through the queue. A job stopped
  before it starts is never sent.
- Supervision: a running job that sends nothing for ``stall_s`` (or a child that
  dies) fails with ``WorkerStalled``; the child is killed and a spare, started
  ahead and already initialised, takes the next job at once; a new spare starts.

The child runs ``serve(channel, *args)``, named ``"module:function"``, so this
package imports nothing of ours. Parent and child talk over a socket pair
(``multiprocessing.connection.Connection``: pickled messages) and share two
64-bit integers in a small memory map: the job to stop and the counter.
``Channel`` is the child's side: ``ready``, ``jobs``, ``send``, ``done``,
``stopped`` and a shared ``count`` for metrics.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import importlib
import itertools
import json
import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from runtime.errors import JobCancelled, RuntimeWorkError, WorkerBusy, WorkerStalled

log = logging.getLogger("seealoud.runtime")

POLL_S = 0.002
"""How often the dispatcher looks for a stop request while a job runs."""
INIT_S = 60.0
"""A new child may take this long to start (imports, engine start) before it is stalled."""


class Channel:
    """The child's end: jobs in, messages out, the stop flag and the shared counter."""

    def __init__(self, conn: Connection, stop: Any, counter: Any) -> None:
        self._conn = conn
        self._stop = stop
        self._counter = counter

    def ready(self, error: str | None = None) -> None:
        """The engine started (or could not: ``error`` says why; then return)."""
        self._conn.send((0, "ready", error))

    def jobs(self) -> Iterator[tuple[int, Any]]:
        """``(job_id, payload)`` until the parent goes away."""
        while True:
            try:
                yield self._conn.recv()
            except (EOFError, OSError):
                return

    def send(self, job_id: int, message: Any) -> None:
        self._conn.send((job_id, "message", message))

    def done(self, job_id: int, error: str | None = None) -> None:
        self._conn.send((job_id, "done", error))

    def stopped(self, job_id: int) -> bool:
        """Whether the parent asked to stop ``job_id`` (cheap: one shared read)."""
        return bool(self._stop.value == job_id)

    def count(self, n: int) -> None:
        """Add to the worker's shared counter (work done, stopped jobs' too)."""
        self._counter.value += n


def _child_main() -> None:
    """Entry of the child interpreter: ``argv`` = socket fd, memory-map fd, sys.path."""
    # Ctrl-C reaches the whole process group: the parent decides when the child ends
    # (it kills it, or the child's socket closes and ``jobs`` returns).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn_fd, mem_fd, path = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    sys.path[:] = path
    conn = Connection(conn_fd)
    memory = mmap.mmap(mem_fd, _SHARED_BYTES)
    stop, counter = _shared_ints(memory)
    serve, args = conn.recv()
    module, _, name = serve.partition(":")
    getattr(importlib.import_module(module), name)(Channel(conn, stop, counter), *args)


_SHARED_BYTES = 16


def _shared_ints(memory: mmap.mmap) -> tuple[ctypes.c_int64, ctypes.c_int64]:
    return ctypes.c_int64.from_buffer(memory, 0), ctypes.c_int64.from_buffer(memory, 8)


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    conn: Connection
    ready: bool = False


@dataclass(order=True)
class Ticket:
    """One submitted job; pass it to ``ProcessWorker.stop``."""

    priority: int
    id: int
    payload: Any = field(compare=False)
    on_message: Callable[[Any], None] = field(compare=False)
    on_done: Callable[[BaseException | None], None] = field(compare=False)
    stopped: Callable[[], bool] = field(compare=False)
    stop_asked: bool = field(compare=False, default=False)

    def is_stopped(self) -> bool:
        return self.stop_asked or self.stopped()


class ProcessWorker:
    """A supervised child process serving jobs one at a time; see the module docstring."""

    def __init__(
        self,
        name: str,
        serve: str,
        *,
        args: tuple = (),
        max_pending: int = 64,
        stall_s: float = 3.0,
    ) -> None:
        self.name = name
        self.max_pending = max_pending
        self.stall_s = stall_s
        self.restarts = 0
        self.error: str | None = None
        self._serve = serve
        self._args = args
        # Two shared integers in a memory-mapped file that only the open descriptor names.
        with tempfile.TemporaryFile() as backing:
            backing.truncate(_SHARED_BYTES)
            self._memory_fd = os.dup(backing.fileno())
        self._memory = mmap.mmap(self._memory_fd, _SHARED_BYTES)
        self._stop, self._counter = _shared_ints(self._memory)
        self._heap: list[Ticket] = []
        self._ids = itertools.count(1)
        self._lock = threading.Condition()
        self._ready = threading.Event()
        self._running: Ticket | None = None
        self._closed = False
        self._child = self._spawn()
        self._spare: _Child | None = None
        threading.Thread(target=self._run, name=f"process-{name}", daemon=True).start()

    @property
    def counted(self) -> int:
        """The shared counter the child adds to (``Channel.count``)."""
        return int(self._counter.value)

    @property
    def pid(self) -> int | None:
        """The serving child's process id (tests, operators)."""
        return self._child.process.pid

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._heap)

    def wait_ready(self, timeout: float | None = None) -> str | None:
        """Block until the first child started; its error text, or ``None``."""
        self._ready.wait(timeout)
        return self.error

    def submit(
        self,
        payload: Any,
        *,
        priority: int = 0,
        on_message: Callable[[Any], None],
        on_done: Callable[[BaseException | None], None],
        stopped: Callable[[], bool] = lambda: False,
    ) -> Ticket:
        """Queue one job (never blocks); ``WorkerBusy`` when the queue is full."""
        ticket = Ticket(priority, next(self._ids), payload, on_message, on_done, stopped)
        with self._lock:
            if self._closed:
                raise WorkerBusy(f"{self.name} is shut down")
            if len(self._heap) >= self.max_pending:
                raise WorkerBusy(f"{self.name} has {self.max_pending} jobs waiting")
            heapq.heappush(self._heap, ticket)
            self._lock.notify()
        return ticket

    def stop(self, ticket: Ticket) -> None:
        """Stop ``ticket``: at once if it runs (the child checks a shared value), or
        before it starts. Safe from any thread."""
        ticket.stop_asked = True
        if self._running is ticket:
            self._stop.value = ticket.id

    def close(self) -> None:
        """Fail what is queued and end the children."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        for child in (self._child, self._spare):
            if child is not None:
                _kill(child)

    # --- the dispatcher thread -------------------------------------------------

    def _spawn(self) -> _Child:
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from runtime.process import _child_main; _child_main()",
                    str(theirs.fileno()),
                    str(self._memory_fd),
                    json.dumps(sys.path),
                ],
                pass_fds=(theirs.fileno(), self._memory_fd),
                stdin=subprocess.DEVNULL,
            )
        conn = Connection(ours.detach())
        conn.send((self._serve, self._args))
        return _Child(process, conn)

    def _run(self) -> None:
        self._first_ready()
        while True:
            with self._lock:
                while not self._heap and not self._closed:
                    self._lock.wait()
                if self._closed:
                    for ticket in self._heap:
                        ticket.on_done(JobCancelled(f"{self.name} is shut down"))
                    self._heap.clear()
                    return
                ticket = heapq.heappop(self._heap)
            if self.error is not None:
                ticket.on_done(RuntimeWorkError(self.error))
            elif ticket.is_stopped():
                ticket.on_done(JobCancelled("stopped before it started"))
            else:
                self._serve_one(ticket)

    def _first_ready(self) -> None:
        try:
            if self._child.conn.poll(INIT_S):
                _, kind, error = self._child.conn.recv()
                self._child.ready = kind == "ready"
                self.error = error
            else:
                self.error = f"{self.name} did not start within {INIT_S:.0f} s"
        except (EOFError, OSError):
            self.error = f"{self.name} exited while starting"
        self._ready.set()
        if self.error is None:
            self._spare = self._spawn()

    def _serve_one(self, ticket: Ticket) -> None:
        child = self._child
        self._running = ticket
        try:
            child.conn.send((ticket.id, ticket.payload))
        except OSError:
            self._replace("it had exited")
            ticket.on_done(WorkerStalled(f"{self.name} had exited; restarted"))
            self._running = None
            return
        last = time.monotonic()
        try:
            while True:
                if ticket.is_stopped() and self._stop.value != ticket.id:
                    self._stop.value = ticket.id
                if child.conn.poll(POLL_S):
                    try:
                        job_id, kind, body = child.conn.recv()
                    except (EOFError, OSError):
                        self._replace("it exited")
                        ticket.on_done(WorkerStalled(f"{self.name} exited mid-job; restarted"))
                        return
                    last = time.monotonic()
                    if kind == "ready":
                        child.ready = True
                    elif job_id != ticket.id:
                        continue
                    elif kind == "message":
                        ticket.on_message(body)
                    else:
                        ticket.on_done(None if body is None else RuntimeWorkError(body))
                        return
                elif time.monotonic() - last > (self.stall_s if child.ready else INIT_S):
                    self._replace(f"a job sent nothing for {self.stall_s:.1f} s")
                    ticket.on_done(WorkerStalled(f"{self.name} stalled; restarted"))
                    return
        finally:
            self._running = None

    def _replace(self, why: str) -> None:
        """Kill the serving child; the spare serves from now on and a new spare starts."""
        _kill(self._child)
        self.restarts += 1
        self._child = self._spare or self._spawn()
        self._spare = self._spawn()
        log.error("%s: killed its process (%s); a fresh one took over", self.name, why)


def _kill(child: _Child) -> None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        child.process.kill()
        child.process.wait(2)
    with contextlib.suppress(OSError):
        child.conn.close()
