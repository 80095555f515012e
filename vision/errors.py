"""Errors of the vision layer::

VisionError                 anything the vision engine reports
├── ModelUnavailable        the model cannot be loaded; the message names the fix
└── BackendError            one call failed (HTTP error, CUDA error, bad output shape)

The model worker's ``WorkerBusy`` / ``DeadlinePassed`` / ``WorkerStalled`` come from
the shared ``runtime`` package (re-exported by ``vision/worker.py``).
"""

from __future__ import annotations


class VisionError(Exception):
    """Base of the vision layer's errors; messages are readable by an operator."""


class ModelUnavailable(VisionError):
    """The model cannot be loaded (no weights, no hub, too little memory, missing package)."""


class BackendError(VisionError):
    """A single model call failed; the next one may succeed."""
