"""The vision model's worker thread: the shared runtime's ``Worker``.

Kept as a module so backends keep one import; the machinery (bounded queue,
priority, deadline, cancel, supervision) lives in ``runtime/worker.py``.
"""

from runtime import DeadlinePassed, WorkerBusy, run_in_daemon_thread
from runtime import Worker as ModelWorker

__all__ = ["DeadlinePassed", "ModelWorker", "WorkerBusy", "run_in_daemon_thread"]
