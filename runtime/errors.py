"""Exceptions of the runtime; the hierarchy is drawn in ``runtime/__init__.py``."""

from __future__ import annotations


class RuntimeWorkError(Exception):
    """Base of the runtime's errors."""


class WorkerBusy(RuntimeWorkError):
    """The worker's queue is full; the job was not queued."""


class DeadlinePassed(RuntimeWorkError):
    """The job's deadline passed while it waited in the queue."""


class JobCancelled(RuntimeWorkError):
    """The job was cancelled before it started."""


class WorkerStalled(RuntimeWorkError):
    """The job ran past the stall limit; its thread was abandoned and replaced."""
