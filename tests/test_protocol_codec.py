"""Exact-bytes and error tests for the protocol codec (no network)."""

from __future__ import annotations

import json

import pytest

import protocol as p
from protocol import (
    CameraFrame,
    ErrorCode,
    Hello,
    MalformedMessage,
    MessageTooLarge,
    ProtocolError,
    UnknownMessageType,
    decode,
    encode,
)

SAMPLES: list[p.Message] = [
    p.Hello(
        protocol=1,
        token="sa_abc",
        client="phone/1.0",
        capabilities=["speech-out"],
        resume="r1",
        id="h1",
    ),
    p.Ready(
        protocol=1,
        session="s1",
        resume="r2",
        user="alice",
        role="user",
        resumed=True,
        limits=p.Limits(
            max_frame_bytes=1000,
            max_message_bytes=4000,
            max_text_bytes=100,
            audio_rate=16000,
            max_audio_ms=30000,
            frame_age_budget_ms=1500,
        ),
        capabilities=p.Capabilities(vision=True, reasons={"speech_in": "not loaded"}),
    ),
    p.Error(code="bad-message", message="nope", fatal=True, ref="x"),
    p.Ping(t=5),
    p.Pong(t=5),
    p.Bye(reason="done"),
    p.CameraFrame(seq=7, ts=1700000000000, width=640, height=480, payload=b"\xff\xd8\x00\xff"),
    p.AudioStart(rate=48000, mode="hands-free"),
    p.AudioChunk(seq=1, ts=2, rate=16000, payload=b"\x01\x00\xff\x7f"),
    p.AudioStop(),
    p.Question(text="is the door open?"),
    p.Interrupt(reason="user"),
    p.TranscriptMsg(text="read the sign", language="en", confidence=0.9, audio_ms=1800),
    p.ObservationMsg(
        frame_seq=3,
        reason="approach",
        signs=["EXIT"],
        scene="A corridor.",
        hazards=[
            p.HazardInfo(label="chair", direction="11 o'clock", distance_m=1.5, urgency="high")
        ],
        answer=None,
        partial=True,
        latency_ms=310,
    ),
    p.SpeechStart(utterance="u1", priority="hazard", text="Chair ahead."),
    p.SpeechChunk(utterance="u1", seq=0, payload=b"\x00\x00" * 8),
    p.SpeechStop(utterance="u1", reason="interrupted"),
    p.SettingsGet(user="alice"),
    p.Settings(user="alice", values={"verbosity": "standard", "rate": 170}),
    p.Settings(
        user="alice",
        values={"voice": None},
        changed=["speech_rate"],
        summary="Speech rate 150.",
        connected=True,
        voices=[p.Choice(value="en-gb", label="English (Great Britain)")],
        languages=[p.Choice(value="en", label="English")],
        warnings=["The voice en-x failed; the default voice was used."],
    ),
    p.CapabilitiesMsg(vision=True, reasons={"text_reading": "Text reading is unavailable."}),
    p.Question(text="read this", intent="read"),
    p.SettingsUpdate(user="alice", values={"quiet": True}),
]


def test_every_message_type_has_a_sample() -> None:
    assert {type(m) for m in SAMPLES} == set(p.ALL_MESSAGES)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.wire_type())
def test_round_trip(message: p.Message) -> None:
    raw = encode(message)
    assert isinstance(raw, bytes if message._BINARY else str)
    assert decode(raw) == message


def test_text_message_exact_bytes() -> None:
    assert encode(Hello(protocol=1, token="t", id="1")) == (
        '{"type":"hello","id":"1","data":{"protocol":1,"token":"t","client":"","capabilities":[]}}'
    )
    assert encode(p.AudioStop()) == '{"type":"audio-stop","data":{}}'


def test_binary_message_exact_bytes() -> None:
    raw = encode(CameraFrame(seq=1, ts=2, width=3, height=4, payload=b"\xff\xd8"))
    header = b'{"type":"camera-frame","seq":1,"ts":2,"width":3,"height":4,"format":"jpeg"}'
    assert raw == len(header).to_bytes(2, "big") + header + b"\xff\xd8"


def test_optional_fields_may_be_omitted_and_none_is_not_sent() -> None:
    msg = decode('{"type":"ping"}')
    assert msg == p.Ping()
    assert encode(p.Ping()) == '{"type":"ping","data":{}}'


def test_repr_never_shows_payload_or_token() -> None:
    frame = CameraFrame(seq=1, ts=2, width=3, height=4, payload=b"\xff\xd8SECRETBYTES")
    assert "SECRETBYTES" not in repr(frame) and "13 bytes" in repr(frame)
    assert "sa_secret" not in repr(Hello(protocol=1, token="sa_secret"))


@pytest.mark.parametrize(
    ("raw", "error", "code"),
    [
        ("not json", MalformedMessage, ErrorCode.BAD_MESSAGE),
        ("[]", MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"teleport","data":{}}', UnknownMessageType, ErrorCode.UNKNOWN_TYPE),
        ('{"type":5}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"question","data":{}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"question","data":{"text":5}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"question","data":{"text":"a","x":1}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"question","data":[]}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        (
            '{"type":"question","data":{"text":"a"},"extra":1}',
            MalformedMessage,
            ErrorCode.BAD_MESSAGE,
        ),
        ('{"type":"question","id":3,"data":{"text":"a"}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"ping","data":{"t":true}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"ping","data":{"t":NaN}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"camera-frame","data":{}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ("[" * 100_000, MalformedMessage, ErrorCode.BAD_MESSAGE),
        (
            '{"type":"ping","data":{"t":' + "9" * 5000 + "}}",
            MalformedMessage,
            ErrorCode.BAD_MESSAGE,
        ),
        (b"", MalformedMessage, ErrorCode.BAD_MESSAGE),
        (b"\x00\x10{}", MalformedMessage, ErrorCode.BAD_MESSAGE),
        (b"\x00\x02\xff\xfe", MalformedMessage, ErrorCode.BAD_MESSAGE),
        (b"\x00\x0f" + b'{"type":"ping"}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        (b"\xff\xff" + b"{" * 70000, MalformedMessage, ErrorCode.BAD_MESSAGE),
        # a key twice: JSON readers disagree on which counts (an attacker pass)
        ('{"type":"ping","type":"bye","data":{"t":1}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"ping","data":{"t":1,"t":2}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        # a lone UTF-16 surrogate is no text: echoed back, it broke the encoder (an attacker pass)
        ('{"type":"ping","id":"\\ud800","data":{}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"question","data":{"text":"a\\udfff"}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        ('{"type":"ping","data":{"\\udbff":1}}', MalformedMessage, ErrorCode.BAD_MESSAGE),
        (
            b"\x00\x2f" + b'{"type":"camera-frame","type":"ping","data":{}}',
            MalformedMessage,
            ErrorCode.BAD_MESSAGE,
        ),
    ],
)
def test_decode_errors(raw: str | bytes, error: type[ProtocolError], code: ErrorCode) -> None:
    with pytest.raises(error) as info:
        decode(raw)
    assert info.value.code == code
    assert str(info.value).startswith(code.value)


def test_a_lone_surrogate_in_a_message_with_an_id_is_refused_about_that_id() -> None:
    """Found by a verification pass: the error had no ``ref``, so the phone could not
    tell which question it was about."""
    with pytest.raises(MalformedMessage) as info:
        decode('{"type":"question","id":"q10","data":{"text":"\\ud800"}}')
    assert info.value.ref == "q10"


def test_a_surrogate_pair_is_one_character_and_kept() -> None:
    msg = decode('{"type":"question","data":{"text":"hi \\ud83d\\ude00"}}')
    assert isinstance(msg, p.Question) and msg.text == "hi \U0001f600"


def test_size_limit() -> None:
    with pytest.raises(MessageTooLarge) as info:
        decode(json.dumps({"type": "question", "data": {"text": "a" * 200}}), max_bytes=100)
    assert info.value.code == ErrorCode.TOO_LARGE


def test_float_fields_accept_integers() -> None:
    msg = decode('{"type":"observation","data":{"hazards":[{"label":"pole","distance_m":2}]}}')
    assert isinstance(msg, p.ObservationMsg)
    assert msg.hazards[0].distance_m == 2.0
