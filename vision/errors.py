"""Errors of the vision layer::

VisionError                 anything the vision engine reports
├── ModelUnavailable        the model cannot be loaded; the message names the fix
├── BackendError            one call failed (HTTP error, CUDA error, bad output shape)
└── WorkerBusy              the model worker's queue is full; try the next frame
"""

from __future__ import annotations


class VisionError(Exception):
    """Base of the vision layer's errors; messages are readable by an operator."""


class ModelUnavailable(VisionError):
    """The model cannot be loaded (no weights, no hub, too little memory, missing package)."""


class BackendError(VisionError):
    """A single model call failed; the next one may succeed."""


class WorkerBusy(VisionError):
    """The worker's bounded queue is full; the request was not taken."""
