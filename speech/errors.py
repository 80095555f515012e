"""Errors of the speech layer::

SpeechError                 anything speech-in or speech-out reports
├── SpeechUnavailable       a model or engine cannot be loaded; the message names the fix
├── SynthesisFailed         one utterance could not be spoken (queue full, synthesis hung
│                           or crashed); the synthesiser goes on for the next one
└── AudioFormatError        audio that cannot be used (odd byte count, bad rate)
"""

from __future__ import annotations


class SpeechError(Exception):
    """Base of the speech layer's errors; messages are readable by an operator."""


class SpeechUnavailable(SpeechError):
    """The speech model or engine cannot be loaded (missing package, model or library)."""


class SynthesisFailed(SpeechError):
    """This utterance was not spoken (busy, hung or crashed); the next one will be."""


class AudioFormatError(SpeechError):
    """The audio is not PCM16 mono at a usable rate."""
