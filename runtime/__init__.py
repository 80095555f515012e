"""Off-event-loop work for every layer: one worker per model and one loader.

``Worker`` is a supervised thread (models whose stuck call can be abandoned);
``WorkerPool`` a few of them for short jobs that may run side by side (the
change detector);
``ProcessWorker`` a supervised child process (engines with process-global state
that can hang in C, like espeak-ng: killed and replaced by a warm spare).

Imports nothing of ours, so ``vision/``, ``speech/`` and ``server/`` all build on it
without importing each other. Exceptions::

    RuntimeWorkError          base of everything raised here
    ├── WorkerBusy            the worker's bounded queue is full (nothing was queued)
    ├── DeadlinePassed        the job's deadline passed before it could start
    ├── JobCancelled          the job was cancelled before it started
    └── WorkerStalled         the job ran past the worker's stall limit; the worker
                              was abandoned and a fresh thread took its place
                              (``ProcessWorker``: the child was killed and replaced)
"""

from runtime.errors import (
    DeadlinePassed,
    JobCancelled,
    RuntimeWorkError,
    WorkerBusy,
    WorkerStalled,
)
from runtime.loader import Loader, run_in_daemon_thread
from runtime.process import Channel, ProcessWorker, Ticket
from runtime.worker import Worker, WorkerPool

__all__ = [
    "Channel",
    "DeadlinePassed",
    "JobCancelled",
    "Loader",
    "ProcessWorker",
    "RuntimeWorkError",
    "Ticket",
    "Worker",
    "WorkerBusy",
    "WorkerPool",
    "WorkerStalled",
    "run_in_daemon_thread",
]
