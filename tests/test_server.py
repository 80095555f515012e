"""The server over real sockets on port 0: auth, limits, errors, newest-frame-wins."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import protocol as p
from protocol import ErrorCode, decode, encode
from server.metrics import read_metrics
from tests.conftest import Accounts, ServerFactory, jpeg_bytes, ws_url
from tests.doubles import BuggyAnalyzerDouble, FailingAnalyzerDouble, GatedAnalyzerDouble

SPEECH = (p.SpeechStart, p.SpeechChunk, p.SpeechStop)


async def recv(ws: ClientConnection, timeout: float = 5.0, *, speech: bool = False) -> p.Message:
    """The next message; speech messages are skipped unless ``speech`` (they interleave)."""
    while True:
        msg = decode(await asyncio.wait_for(ws.recv(), timeout))
        if speech or not isinstance(msg, SPEECH):
            return msg


async def open_session(url: str, token: str) -> tuple[ClientConnection, p.Ready]:
    ws = await connect(url, compression=None, max_size=None)
    await ws.send(encode(p.Hello(protocol=1, token=token, id="h")))
    ready = await recv(ws)
    assert isinstance(ready, p.Ready), ready
    return ws, ready


T = TypeVar("T")


def frame(seq: int, payload: bytes | None = None, size: tuple[int, int] = (64, 48)) -> str | bytes:
    data = payload if payload is not None else jpeg_bytes(*size)
    width, height = size
    return encode(p.CameraFrame(seq=seq, ts=1000 + seq, width=width, height=height, payload=data))


async def closed_code(ws: ClientConnection) -> int | None:
    await asyncio.wait_for(ws.wait_closed(), 5)
    return ws.close_code


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_health_ready_and_metrics(make_server: ServerFactory) -> None:
    server = await make_server()
    status, body = await asyncio.to_thread(http_get, server.port, "/healthz")
    assert (status, body) == (200, b"ok\n")
    status, body = await asyncio.to_thread(http_get, server.port, "/readyz")
    caps = json.loads(body)["capabilities"]
    assert status == 200 and caps["vision"] is False and "vision" in caps["reasons"]
    status, body = await asyncio.to_thread(http_get, server.port, "/metrics")
    assert status == 200 and read_metrics(body.decode())["sessions_active"] == 0
    status, _ = await asyncio.to_thread(http_get, server.port, "/nope")
    assert status == 404


async def test_hello_ready(make_server: ServerFactory, accounts: Accounts) -> None:
    server = await make_server(GatedAnalyzerDouble())
    ws, ready = await open_session(ws_url(server), accounts.user_token)
    assert ready.user == "alice" and ready.role == "user" and ready.id == "h"
    assert ready.limits.max_frame_bytes == server.config.max_frame_bytes
    assert ready.capabilities.vision is True
    await ws.send(encode(p.Ping(t=42, id="p")))
    assert await recv(ws) == p.Pong(t=42, id="p")
    await ws.send(encode(p.Bye()))
    assert await closed_code(ws) == 1000


@pytest.mark.parametrize("token", ["", "wrong", "sa_aaaaaaaaaaaa_" + "b" * 43])
async def test_wrong_token_is_refused_without_model_work(
    make_server: ServerFactory, token: str
) -> None:
    analyzer = GatedAnalyzerDouble()
    server = await make_server(analyzer)
    ws = await connect(ws_url(server))
    await ws.send(encode(p.Hello(protocol=1, token=token)))
    await ws.send(frame(0))
    error = await recv(ws)
    assert isinstance(error, p.Error) and error.code == ErrorCode.AUTH_FAILED and error.fatal
    assert (
        await closed_code(ws) == p.CLOSE_AUTH_REFUSED
    )  # the only close that makes a phone forget its token
    assert analyzer.requests == [] and server.metrics.auth_failures == 1


async def test_removed_user_token_stops_working(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server()
    accounts.store.remove("alice")
    ws = await connect(ws_url(server))
    await ws.send(encode(p.Hello(protocol=1, token=accounts.user_token)))
    assert (await recv(ws)).code == ErrorCode.AUTH_FAILED  # type: ignore[attr-defined]


async def test_first_message_must_be_hello(make_server: ServerFactory) -> None:
    server = await make_server()
    ws = await connect(ws_url(server))
    await ws.send(frame(0))
    error = await recv(ws)
    assert isinstance(error, p.Error) and error.code == ErrorCode.NOT_AUTHENTICATED
    assert await closed_code(ws) == 1008


async def test_silent_client_is_closed_after_hello_timeout(make_server: ServerFactory) -> None:
    server = await make_server(hello_timeout_s=0.2)
    ws = await connect(ws_url(server))
    error = await recv(ws)
    assert isinstance(error, p.Error) and error.code == ErrorCode.NOT_AUTHENTICATED
    assert await closed_code(ws) == 1008


async def test_unsupported_version(make_server: ServerFactory, accounts: Accounts) -> None:
    server = await make_server()
    ws = await connect(ws_url(server))
    await ws.send(encode(p.Hello(protocol=99, token=accounts.user_token)))
    error = await recv(ws)
    assert isinstance(error, p.Error) and error.code == ErrorCode.UNSUPPORTED_VERSION
    assert await closed_code(ws) == 1002


async def test_origin_allowlist(make_server: ServerFactory, accounts: Accounts) -> None:
    server = await make_server(origins=["https://phone.example"])
    with pytest.raises(InvalidStatus) as info:
        await connect(ws_url(server), origin="https://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    ws = await connect(ws_url(server), origin="https://phone.example")  # type: ignore[arg-type]
    await ws.close()
    same = await connect(ws_url(server), origin=f"http://127.0.0.1:{server.port}")  # type: ignore[arg-type]
    await same.close()


async def test_bad_messages_get_errors_and_the_session_goes_on(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server(GatedAnalyzerDouble())
    ws, _ = await open_session(ws_url(server), accounts.user_token)
    cases: list[tuple[str | bytes, ErrorCode]] = [
        ("{not json", ErrorCode.BAD_MESSAGE),
        ('{"type":"fly","data":{}}', ErrorCode.UNKNOWN_TYPE),
        (b"\x00", ErrorCode.BAD_MESSAGE),
        (frame(1, payload=b"GIF89a"), ErrorCode.BAD_MESSAGE),
        (
            encode(p.CameraFrame(seq=1, ts=1, width=1, height=1, format="png", payload=b"\x89PNG")),
            ErrorCode.UNSUPPORTED_FORMAT,
        ),
        (
            encode(
                p.Ready(
                    protocol=1,
                    session="x",
                    resume="y",
                    user="u",
                    role="user",
                    limits=p.Limits(
                        max_frame_bytes=1,
                        max_message_bytes=1,
                        max_text_bytes=1,
                        audio_rate=1,
                        max_audio_ms=1,
                        frame_age_budget_ms=1,
                    ),
                    capabilities=p.Capabilities(),
                )
            ),
            ErrorCode.UNEXPECTED_MESSAGE,
        ),
        ('{"type":"question","data":{"text":"' + "x" * 70_000 + '"}}', ErrorCode.TOO_LARGE),
        # found by an attacker pass: a seq a JavaScript client cannot hold exactly
        ('{"type":"ping","data":{"t":' + str(2**70) + "}}", ErrorCode.BAD_MESSAGE),
        # found by an attacker pass: an intent nobody knows was taken as a question
        ('{"type":"question","data":{"text":"hi","intent":"evil"}}', ErrorCode.BAD_MESSAGE),
        # found by an attacker pass: the last "type" won, so this closed the session
        ('{"type":"ping","type":"bye","data":{"t":1}}', ErrorCode.BAD_MESSAGE),
    ]
    for raw, code in cases:
        await ws.send(raw)
        error = await recv(ws)
        assert isinstance(error, p.Error) and error.code == code and not error.fatal, raw[:40]
    # found by attacker passes: a message with a valid id but bad data, an unknown type
    # or an unknown envelope key got no ref; a 400-digit number where a float goes raised
    # OverflowError and closed the session with 1011
    huge = "1" + "0" * 400
    for raw, code in [
        ('{"type":"ping","id":"X","data":{"t":"bad"}}', ErrorCode.BAD_MESSAGE),
        ('{"type":"nope","id":"X","data":{}}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"ping","id":"X","data":{"t":1},"extra":1}', ErrorCode.BAD_MESSAGE),
        (
            '{"type":"observation","id":"X","data":{"hazards":[{"label":"a","direction":'
            '"ahead","distance_m":' + huge + ',"urgency":"high"}]}}',
            ErrorCode.BAD_MESSAGE,
        ),
    ]:
        await ws.send(raw)
        error = await recv(ws)
        assert isinstance(error, p.Error) and error.code == code and not error.fatal, raw
        assert error.ref == "X", raw
    await ws.send(encode(p.Ping(t=1)))
    assert isinstance(await recv(ws), p.Pong)


async def test_oversize_frame_is_refused_and_the_session_goes_on(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server(max_frame_bytes=10_000, max_message_bytes=50_000)
    ws, ready = await open_session(ws_url(server), accounts.user_token)
    assert ready.limits.max_frame_bytes == 10_000
    await ws.send(frame(1, payload=b"\xff\xd8" + bytes(20_000)))
    error = await recv(ws)
    assert isinstance(error, p.Error) and error.code == ErrorCode.FRAME_TOO_LARGE
    assert not error.fatal
    await ws.send(frame(2))
    await ws.send(encode(p.Ping(t=2)))
    assert await recv(ws) == p.Pong(t=2)
    assert server.metrics.frames_received == 1 and server.metrics.frames_rejected == 1
    # Above the hard websocket limit the connection itself is closed (1009).
    await ws.send(frame(3, payload=b"\xff\xd8" + bytes(60_000)))
    assert await closed_code(ws) == 1009


async def test_newest_frame_wins_while_the_model_is_busy(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    analyzer = GatedAnalyzerDouble()
    server = await make_server(analyzer, change_detection=False)  # every frame is offered
    ws, _ = await open_session(ws_url(server), accounts.user_token)
    await ws.send(frame(0))
    await asyncio.wait_for(analyzer.started.wait(), 5)  # the model is now busy with frame 0
    for seq in range(1, 21):
        await ws.send(frame(seq))
    await ws.send(encode(p.Ping(t=0)))
    assert isinstance(await recv(ws), p.Pong)  # the socket was never blocked
    session = server.user_session("alice")
    assert session.media.slot.received == 21
    # Frames waiting for the busy model were replaced, in one slot or the other.
    assert session.media.slot.dropped + session.media.model_slot.dropped >= 18
    analyzer.release()
    first = await recv(ws)
    second = await recv(ws)
    assert [first.frame_seq, second.frame_seq] == [0, 20]  # type: ignore[attr-defined]
    assert [r.frame.frame.seq for r in analyzer.requests] == [0, 20]


async def test_question_uses_the_newest_frame(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    analyzer = GatedAnalyzerDouble()
    analyzer.release()
    server = await make_server(analyzer)
    ws, _ = await open_session(ws_url(server), accounts.user_token)
    await ws.send(encode(p.Question(text="is the door open?", id="q1")))
    error = await recv(ws)
    assert isinstance(error, p.Error) and error.code == ErrorCode.NO_FRAME
    await ws.send(frame(5))
    assert (await recv(ws)).frame_seq == 5  # type: ignore[attr-defined]
    await ws.send(encode(p.Question(text="is the door open?", id="q2")))
    answer = await recv(ws)
    assert isinstance(answer, p.ObservationMsg) and answer.id == "q2"
    assert answer.reason == "question" and answer.answer == "answer to is the door open?"


async def test_dead_model_reports_model_failed_and_serves_on(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    analyzer = FailingAnalyzerDouble()
    server = await make_server(analyzer, change_detection=False)
    ws, _ = await open_session(ws_url(server), accounts.user_token)
    for seq in range(2):
        await ws.send(frame(seq))
        error = await recv(ws)
        assert isinstance(error, p.Error) and error.code == ErrorCode.MODEL_FAILED
    await ws.send(encode(p.Ping(t=3)))
    assert await recv(ws) == p.Pong(t=3)


async def test_crashed_handler_closes_1011_and_others_keep_going(
    make_server: ServerFactory, accounts: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(BuggyAnalyzerDouble())
    broken, _ = await open_session(ws_url(server), accounts.user_token)
    healthy, _ = await open_session(ws_url(server), accounts.other_token)
    with caplog.at_level(logging.ERROR, logger="seealoud.server"):
        await broken.send(frame(0))
        error = await recv(broken)
        assert isinstance(error, p.Error) and error.code == ErrorCode.INTERNAL and error.fatal
        assert await closed_code(broken) == 1011
    assert any(r.exc_info for r in caplog.records if "crashed" in r.getMessage())
    assert server.metrics.handler_crashes == 1
    await healthy.send(encode(p.Ping(t=9)))
    assert await recv(healthy) == p.Pong(t=9)


async def test_caregiver_cannot_stream_media(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    analyzer = GatedAnalyzerDouble()
    server = await make_server(analyzer)
    ws, ready = await open_session(ws_url(server), accounts.caregiver_token)
    assert ready.role == "caregiver"
    await ws.send(frame(0))
    error = await recv(ws)
    assert isinstance(error, p.Error) and error.code == ErrorCode.FORBIDDEN
    assert analyzer.requests == []


async def test_resume_keeps_the_session_id(make_server: ServerFactory, accounts: Accounts) -> None:
    server = await make_server()
    ws, ready = await open_session(ws_url(server), accounts.user_token)
    await ws.close()
    await asyncio.wait_for(_until(lambda: not server.sessions), 5)
    again = await connect(ws_url(server))
    await again.send(encode(p.Hello(protocol=1, token=accounts.user_token, resume=ready.resume)))
    resumed = await recv(again)
    assert isinstance(resumed, p.Ready) and resumed.resumed and resumed.session == ready.session
    assert resumed.resume != ready.resume  # rotated: a resume token works once
    # Another user cannot take over the session with a stolen resume token, live or
    # closed, nor spend it: its owner still resumes with it.
    other = await connect(ws_url(server))
    await other.send(encode(p.Hello(protocol=1, token=accounts.other_token, resume=resumed.resume)))
    assert (await recv(other)).resumed is False  # type: ignore[attr-defined]
    await again.close()
    await asyncio.wait_for(_until(lambda: len(server.sessions) == 1), 5)  # bob's remains
    thief = await connect(ws_url(server))
    await thief.send(encode(p.Hello(protocol=1, token=accounts.other_token, resume=resumed.resume)))
    assert (await recv(thief)).resumed is False  # type: ignore[attr-defined]
    owner = await connect(ws_url(server))
    await owner.send(encode(p.Hello(protocol=1, token=accounts.user_token, resume=resumed.resume)))
    back = await recv(owner)
    assert isinstance(back, p.Ready) and back.resumed and back.session == ready.session
    for socket in (other, thief, owner):
        await socket.close()


async def test_shutdown_says_bye_and_closes_1001(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server()
    ws, _ = await open_session(ws_url(server), accounts.user_token)
    await server.close()
    bye = await recv(ws)
    assert isinstance(bye, p.Bye) and bye.reason == "server-shutdown"
    assert await closed_code(ws) == 1001


async def test_logs_hold_no_token_and_no_media(
    make_server: ServerFactory, accounts: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("websockets.client").setLevel(logging.INFO)  # the test's own client
    server = await make_server(FailingAnalyzerDouble())
    marker = b"\xff\xd8" + b"PIXELSECRET" * 10
    ws, _ = await open_session(ws_url(server), accounts.user_token)
    await ws.send(frame(0, payload=marker))
    error = await recv(ws)
    assert isinstance(error, p.Error) and error.code == ErrorCode.BAD_MESSAGE
    await ws.send(encode(p.Bye()))
    await closed_code(ws)
    bad = await connect(ws_url(server))
    await bad.send(encode(p.Hello(protocol=1, token=accounts.user_token + "x")))
    with pytest.raises(ConnectionClosed):
        await recv(bad)
        await recv(bad)
    text = caplog.text
    assert "session" in text and "authentication failed" in text
    secret = accounts.user_token.split("_", 2)[-1]  # sa_<id>_<secret>: the secret may hold "_"
    assert secret not in text and "PIXELSECRET" not in text


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)  # polling the server's own state, bounded by wait_for


async def test_unloadable_model_is_named_and_the_rest_keeps_working(
    make_server: ServerFactory, accounts: Accounts, tmp_path: Path
) -> None:
    pytest.importorskip("torch", reason="the vlm extra is not installed")
    from server.analysis import build_engine
    from server.config import ServerConfig

    engine = build_engine(ServerConfig(model=str(tmp_path / "no-such-model"), device="cpu"))
    assert engine is not None
    server = await make_server(engine=engine)
    status, body = await asyncio.to_thread(http_get, server.port, "/healthz")
    assert status == 200  # answered while the model is still loading
    assert server.vision is not None
    await asyncio.wait_for(server.vision.loaded.wait(), 120)
    _, body = await asyncio.to_thread(http_get, server.port, "/readyz")
    caps = json.loads(body)["capabilities"]
    assert caps["vision"] is False and "failed" in json.loads(body)["details"]["vision"]
    ws, ready = await open_session(ws_url(server), accounts.user_token)
    assert "no-such-model" in json.loads(body)["details"]["vision"]  # operator text
    # The phone gets one short sentence, never the operator's instructions.
    assert ready.capabilities.vision is False
    assert ready.capabilities.reasons["vision"] == "Vision is unavailable on this server."
    await ws.send(frame(0))
    await ws.send(encode(p.Question(text="what is ahead?", id="q")))
    error = await recv(ws)
    assert isinstance(error, p.Error) and error.code == ErrorCode.CAPABILITY_UNAVAILABLE
    assert error.ref == "q" and "no-such-model" not in error.message
    await ws.send(encode(p.Ping(t=1)))
    assert await recv(ws) == p.Pong(t=1)


async def test_tiny_model_end_to_end(
    make_server: ServerFactory, accounts: Accounts, tiny_vlm: Path
) -> None:
    """A real (tiny, random-weight) Qwen3-VL behind the server: a question gets an
    observation whose text came from the model; its gibberish is not passed on as fact."""
    from server.analysis import build_engine
    from server.config import ServerConfig

    engine = build_engine(
        ServerConfig(model=str(tiny_vlm), device="cpu", vlm_max_new_tokens=8, vlm_deadline_s=30)
    )
    assert engine is not None
    server = await make_server(engine=engine)
    assert server.vision is not None
    await asyncio.wait_for(server.vision.loaded.wait(), 120)
    assert engine.ready
    ws, ready = await open_session(ws_url(server), accounts.user_token)
    assert ready.capabilities.vision is True
    await ws.send(frame(0, size=(640, 480)))
    await ws.send(encode(p.Question(text="is the door open?", id="q1")))
    answer = await _first(ws, p.ObservationMsg, lambda m: m.id == "q1")
    assert answer.reason == "question" and answer.frame_seq == 0 and answer.latency_ms


async def _first(ws: ClientConnection, cls: type[T], pred: Callable[[T], bool]) -> T:
    while True:
        msg = await recv(ws, timeout=60)
        if isinstance(msg, cls) and pred(msg):
            return msg


async def test_pages_are_served_with_a_strict_policy(make_server: ServerFactory) -> None:
    server = await make_server()
    for path, kind in (
        ("/", "text/html"),
        ("/caregiver", "text/html"),
        ("/static/phone.js", "text/javascript"),
        ("/static/capture-worklet.js", "text/javascript"),
    ):
        headers, body = await asyncio.to_thread(_get_with_headers, server.port, path)
        assert headers["Content-Type"].startswith(kind) and body
        assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, _ = await asyncio.to_thread(http_get, server.port, "/static/../server/auth.py")
    assert status == 404


def _get_with_headers(port: int, path: str) -> tuple[dict[str, str], bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return dict(resp.headers), resp.read()


async def test_caregiver_ready_lists_the_people_they_manage(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server()
    _, ready = await open_session(ws_url(server), accounts.caregiver_token)
    assert ready.role == "caregiver" and ready.manages == ["alice"]
    _, user_ready = await open_session(ws_url(server), accounts.user_token)
    assert user_ready.manages == []


def test_self_signed_certificate_for_the_lan(tmp_path: Path) -> None:
    pytest.importorskip("cryptography", reason="the tls extra is not installed")
    import ssl

    from cryptography import x509

    from server.cli import main

    assert main(["cert", "--out", str(tmp_path), "--name", "laptop.local"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "laptop.local" in names.get_values_for_type(x509.DNSName)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (tmp_path / "key.pem").stat().st_mode & 0o077 == 0  # private key not readable by others
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")  # a usable pair


async def test_a_client_pointed_at_the_root_is_served_and_elsewhere_told_where(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server()
    ws = await connect(f"ws://127.0.0.1:{server.port}")  # no /ws: the root works too
    await ws.send(encode(p.Hello(protocol=1, token=accounts.user_token)))
    assert isinstance(decode(await ws.recv()), p.Ready)
    await ws.close()
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{server.port}/caregiver")
    assert refused.value.response.status_code == 404
    assert b"/ws" in refused.value.response.body
