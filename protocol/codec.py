"""Pure encode/decode between message dataclasses and websocket payloads.

Text messages are compact JSON: ``{"type": ..., "id"?: ..., "data": {...}}``.
Binary messages are::

    uint16 big-endian header length N | N bytes of JSON header | payload bytes

where the header is ``{"type": ..., "id"?: ..., <fields except payload>}``.

``decode`` raises only ``protocol.errors.ProtocolError`` subclasses, whatever
it is given; field types are checked against the dataclass annotations, so a
decoded message always has the types it declares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import struct
import types
import typing
from collections import Counter
from collections.abc import Iterator
from functools import cache
from typing import Any, TypeVar, Union

from protocol.errors import MalformedMessage, MessageTooLarge, ProtocolError, UnknownMessageType
from protocol.messages import MESSAGE_TYPES, Message

MAX_HEADER_BYTES = 4096
"""Largest JSON header a binary message may have."""

_HEADER_LEN = struct.Struct(">H")
_RESERVED = ("type", "id", "data")
MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer a JavaScript number holds exactly (``Number.MAX_SAFE_INTEGER``)."""

T = TypeVar("T")


def encode(message: Message) -> str | bytes:
    """Encode a message: ``str`` for text messages, ``bytes`` for media."""
    body = _to_json_value(message)
    assert isinstance(body, dict)
    if message._BINARY:
        payload = body.pop("payload", b"")
        header: dict[str, Any] = {"type": message.wire_type()}
        if message.id is not None:
            header["id"] = message.id
        header.update(body)
        head = _dumps(header).encode("utf-8")
        if len(head) > MAX_HEADER_BYTES:
            raise MessageTooLarge(f"binary header is {len(head)} bytes, limit {MAX_HEADER_BYTES}")
        return _HEADER_LEN.pack(len(head)) + head + bytes(payload)
    envelope: dict[str, Any] = {"type": message.wire_type()}
    if message.id is not None:
        envelope["id"] = message.id
    envelope["data"] = body
    return _dumps(envelope)


def decode(raw: str | bytes, *, max_bytes: int | None = None) -> Message:
    """Decode one websocket message; raise ``ProtocolError`` on anything invalid."""
    if isinstance(raw, str):
        if max_bytes is not None and len(raw) > max_bytes:
            raise MessageTooLarge(f"text message of {len(raw)} characters, limit {max_bytes}")
        envelope = _loads(raw)
        if not isinstance(envelope, dict):
            raise MalformedMessage("a text message must be a JSON object")
        msg_id = envelope.get("id")
        with _about(msg_id if _all_unicode(msg_id) else None):
            _unicode_only(raw, envelope)
            return _text_message(envelope)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
        if max_bytes is not None and len(raw) > max_bytes:
            raise MessageTooLarge(f"binary message of {len(raw)} bytes, limit {max_bytes}")
        if len(raw) < _HEADER_LEN.size:
            raise MalformedMessage("binary message shorter than its length prefix")
        (head_len,) = _HEADER_LEN.unpack_from(raw)
        if head_len > MAX_HEADER_BYTES:
            raise MalformedMessage(f"binary header of {head_len} bytes, limit {MAX_HEADER_BYTES}")
        end = _HEADER_LEN.size + head_len
        if len(raw) < end:
            raise MalformedMessage("binary message truncated inside its header")
        try:
            head_text = raw[_HEADER_LEN.size : end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessage("binary header is not UTF-8") from exc
        header = _loads(head_text)
        if not isinstance(header, dict):
            raise MalformedMessage("binary header must be a JSON object")
        _unicode_only(head_text, header)
        cls = _message_class(header.pop("type", None))
        if not cls._BINARY:
            raise MalformedMessage(f"{cls.wire_type()} must be sent as a text message")
        msg_id = header.pop("id", None)
        if "payload" in header:
            raise MalformedMessage("'payload' is not a header field")
        with _about(msg_id):
            return _build(cls, header, msg_id, payload=raw[end:])
    raise MalformedMessage(f"cannot decode a {type(raw).__name__}")


@contextlib.contextmanager
def _about(msg_id: object) -> Iterator[None]:
    """A ``ProtocolError`` raised inside says which message it is about: its ``ref`` is
    the message's ``id``, when that is a string."""
    try:
        yield
    except ProtocolError as exc:
        exc.ref = msg_id if isinstance(msg_id, str) else None
        raise


def _text_message(envelope: dict[str, Any]) -> Message:
    extra = set(envelope) - set(_RESERVED)
    if extra:
        raise MalformedMessage(f"unknown envelope keys: {sorted(extra)[:3]}")
    cls = _message_class(envelope.get("type"))
    if cls._BINARY:
        raise MalformedMessage(f"{cls.wire_type()} must be sent as a binary message")
    data = envelope.get("data", {})
    if not isinstance(data, dict):
        raise MalformedMessage("'data' must be a JSON object")
    return _build(cls, data, envelope.get("id"), payload=None)


def as_data(message: Message) -> dict[str, Any]:
    """The message's fields as JSON-ready values (payload excluded), e.g. for printing."""
    body = _to_json_value(message)
    body.pop("payload", None)
    return body


# --- internals -------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise MalformedMessage(f"JSON constant {name} is not allowed")


def _one_of_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object with a key twice is refused: Python keeps the last, other readers the
    first, so a proxy or logger in front of the server would see another message (a
    ``type`` of ``ping`` then ``bye`` was a ``bye`` here: an attacker pass)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        twice = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise MalformedMessage(f"key {twice[:40]!r} appears twice")
    return out


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
"""A JSON escape of a UTF-16 surrogate: a pair is one character, a lone one is none."""


def _loads(text: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_one_of_each)
    except MalformedMessage:
        raise
    except RecursionError as exc:
        raise MalformedMessage("invalid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError and over-long integer literals
        raise MalformedMessage(f"invalid JSON: {str(exc)[:80]}") from exc
    return value


def _unicode_only(text: str, value: Any) -> None:
    """json reads "\ud800" alone as a string no UTF-8 can hold: echoed back (an id, a
    question), it broke the encoder and the connection (an attacker pass)."""
    if _SURROGATE_ESCAPE.search(text) and not _all_unicode(value):
        raise MalformedMessage("a string holds a lone UTF-16 surrogate: not Unicode text")


def _all_unicode(value: Any) -> bool:
    """Every string in ``value`` (keys too) can be written as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _message_class(wire_type: object) -> type[Message]:
    if not isinstance(wire_type, str):
        raise MalformedMessage("'type' must be a string")
    cls = MESSAGE_TYPES.get(wire_type)
    if cls is None:
        raise UnknownMessageType(f"unknown message type {wire_type[:40]!r}")
    return cls


def _to_json_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            if f.name == "id" and isinstance(value, Message):
                continue
            item = getattr(value, f.name)
            if item is None:
                continue
            out[f.name] = _to_json_value(item)
        return out
    if isinstance(value, list | tuple):
        return [_to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json_value(v) for k, v in value.items()}
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    import protocol.messages as module

    return typing.get_type_hints(cls, globalns=vars(module))


def _build(cls: type[T], data: dict[str, Any], msg_id: object, *, payload: bytes | None) -> T:
    if msg_id is not None and not isinstance(msg_id, str):
        raise MalformedMessage("'id' must be a string")
    kwargs = _fields_from(cls, data, cls.__name__)
    if payload is not None:
        kwargs["payload"] = payload
    if issubclass(cls, Message):
        kwargs["id"] = msg_id
    return cls(**kwargs)


def _fields_from(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("id", "payload")}
    unknown = set(data) - set(known)
    if unknown:
        raise MalformedMessage(f"{where}: unknown field {sorted(unknown)[0][:40]!r}")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            if not has_default:
                raise MalformedMessage(f"{where}: missing field {name!r}")
            continue
        kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}")
    return kwargs


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is list:
        if not isinstance(value, list):
            raise MalformedMessage(f"{where}: expected a list")
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise MalformedMessage(f"{where}: expected an object")
        _, inner = typing.get_args(tp)
        return {k: _coerce(v, inner, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise MalformedMessage(f"{where}: expected an object")
        return tp(**_fields_from(tp, value, where))
    if tp is bool:
        if not isinstance(value, bool):
            raise MalformedMessage(f"{where}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MalformedMessage(f"{where}: expected an integer")
        if abs(value) > MAX_SAFE_INTEGER:  # a JavaScript client could not read it back
            raise MalformedMessage(f"{where}: integer beyond +-2^53 - 1")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedMessage(f"{where}: expected a number")
        # a 400-digit integer does not fit a float at all (OverflowError: the session died)
        if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
            raise MalformedMessage(f"{where}: number beyond +-2^53 - 1")
        if not math.isfinite(value):
            raise MalformedMessage(f"{where}: expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise MalformedMessage(f"{where}: expected a string")
        return value
    raise TypeError(f"codec cannot handle annotation {tp!r} at {where}")  # a bug in messages.py
