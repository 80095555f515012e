"""Off-event-loop work for every layer: one worker thread per model and one loader.

Imports nothing of ours, so ``vision/``, ``speech/`` and ``server/`` all build on it
without importing each other. Exceptions::

    RuntimeWorkError          base of everything raised here
    ├── WorkerBusy            the worker's bounded queue is full (nothing was queued)
    ├── DeadlinePassed        the job's deadline passed before it could start
    ├── JobCancelled          the job was cancelled before it started
    └── WorkerStalled         the job ran past the worker's stall limit; the worker
                              was abandoned and a fresh thread took its place
"""

from runtime.errors import (
    DeadlinePassed,
    JobCancelled,
    RuntimeWorkError,
    WorkerBusy,
    WorkerStalled,
)
from runtime.loader import Loader, run_in_daemon_thread
from runtime.worker import Worker

__all__ = [
    "DeadlinePassed",
    "JobCancelled",
    "Loader",
    "RuntimeWorkError",
    "Worker",
    "WorkerBusy",
    "WorkerStalled",
    "run_in_daemon_thread",
]
