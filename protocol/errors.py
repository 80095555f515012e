"""Errors of the wire protocol and the stable codes the server sends.

Decoding raises only these exceptions, whatever bytes arrive::

    ProtocolError                 every decode failure; has a stable ``code``
    ├── MalformedMessage          not JSON / not our framing / wrong field types
    ├── UnknownMessageType        well-formed envelope, unknown ``type``
    └── MessageTooLarge           bigger than the limit the caller passed

``ErrorCode`` lists every code an ``error`` message may carry, including the
ones the server raises for reasons outside the codec (auth, limits, models).
Codes are part of the protocol: never rename one, only add.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes sent in ``error.data.code``."""

    BAD_MESSAGE = "bad-message"
    UNKNOWN_TYPE = "unknown-type"
    TOO_LARGE = "too-large"
    FRAME_TOO_LARGE = "frame-too-large"
    UNSUPPORTED_VERSION = "unsupported-version"
    UNSUPPORTED_FORMAT = "unsupported-format"
    NOT_AUTHENTICATED = "not-authenticated"
    AUTH_FAILED = "auth-failed"
    FORBIDDEN = "forbidden"
    UNEXPECTED_MESSAGE = "unexpected-message"
    INVALID_SETTINGS = "invalid-settings"
    UNKNOWN_USER = "unknown-user"
    CAPABILITY_UNAVAILABLE = "capability-unavailable"
    MODEL_FAILED = "model-failed"
    AUDIO_TOO_LONG = "audio-too-long"
    NO_FRAME = "no-frame"
    RATE_LIMITED = "rate-limited"
    TOO_MANY_SESSIONS = "too-many-sessions"
    BUSY = "busy"
    SLOW_CLIENT = "slow-client"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A message could not be decoded; ``code`` is what the server reports."""

    code: ErrorCode = ErrorCode.BAD_MESSAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.ref: str | None = None
        """The message's own ``id`` when it had a valid one (the error's ``ref``)."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class MalformedMessage(ProtocolError):
    """The bytes are not a valid message: bad JSON, framing or field types."""

    code = ErrorCode.BAD_MESSAGE


class UnknownMessageType(ProtocolError):
    """The envelope is valid but its ``type`` is not one this version knows."""

    code = ErrorCode.UNKNOWN_TYPE


class MessageTooLarge(ProtocolError):
    """The message is larger than the limit the decoder was given."""

    code = ErrorCode.TOO_LARGE


CLOSE_AUTH_REFUSED = 4001
"""Websocket close code after ``auth-failed``: the token itself was refused. Only this
code (or the ``auth-failed`` error) tells a client to forget its token; a slow network,
a malformed hello or a rate limit closes with 1008 and the token stays valid."""
