"""SeeAloud wire protocol v1: message dataclasses and a sans-I/O codec.

Imports nothing outside the standard library, so phone-side Python tools and
the server share one definition of the protocol.
"""

from protocol.codec import MAX_HEADER_BYTES, decode, encode
from protocol.errors import (
    CLOSE_AUTH_REFUSED,
    ErrorCode,
    MalformedMessage,
    MessageTooLarge,
    ProtocolError,
    UnknownMessageType,
)
from protocol.messages import *  # noqa: F403
from protocol.messages import ALL_MESSAGES, MESSAGE_TYPES, Message
from protocol.version import PROTOCOL_VERSION

__all__ = [
    "ALL_MESSAGES",
    "CLOSE_AUTH_REFUSED",
    "MAX_HEADER_BYTES",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "ErrorCode",
    "MalformedMessage",
    "Message",
    "MessageTooLarge",
    "ProtocolError",
    "UnknownMessageType",
    "decode",
    "encode",
]
