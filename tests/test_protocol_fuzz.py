"""Property tests: decoding never raises anything but the protocol's own errors.

Over 10,000 examples in all: random text and bytes, and valid messages that
are then mutated (bytes flipped, cut, inserted; JSON values swapped).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol as p
from protocol import ProtocolError, decode, encode
from tests.test_protocol_codec import SAMPLES

FUZZ = settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))


def _decode_or_protocol_error(raw: str | bytes) -> None:
    try:
        decode(raw)
    except ProtocolError as exc:
        assert exc.code and exc.message
    # any other exception propagates and fails the test


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(raw: bytes) -> None:
    _decode_or_protocol_error(raw)


@FUZZ
@given(st.text(max_size=512))
def test_random_text(raw: str) -> None:
    _decode_or_protocol_error(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_json_fields(message: p.Message, data: st.DataObject) -> None:
    raw = encode(message)
    if isinstance(raw, bytes):
        head_len = int.from_bytes(raw[:2], "big")
        doc = json.loads(raw[2 : 2 + head_len])
        target = doc
    else:
        doc = json.loads(raw)
        target = doc["data"]
    keys = [*target.keys(), "unexpected"]
    target[data.draw(st.sampled_from(keys))] = data.draw(json_values)
    if isinstance(raw, bytes):
        head = json.dumps(doc).encode()
        mutated: str | bytes = len(head).to_bytes(2, "big") + head + raw[2 + head_len :]
    else:
        mutated = json.dumps(doc)
    _decode_or_protocol_error(mutated)


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_bytes(message: p.Message, data: st.DataObject) -> None:
    raw = encode(message)
    buf = bytearray(raw.encode() if isinstance(raw, str) else raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del buf[pos : pos + data.draw(st.integers(1, 8))]
        else:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    _decode_or_protocol_error(bytes(buf))
    try:
        text = buf.decode("utf-8")
    except UnicodeDecodeError:
        return
    _decode_or_protocol_error(text)
