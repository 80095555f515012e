"""POST /v1/describe on a real port: token, limits, a JPEG in, the observation out."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from protocol import HazardInfo
from tests.conftest import Accounts, ServerFactory, jpeg_bytes
from tests.doubles import FailingAnalyzerDouble, GatedAnalyzerDouble, ScriptedAnalyzerDouble
from tests.phone import observation

pytest.importorskip("aiohttp", reason="the describe extra is not installed")


def post(
    port: int, body: bytes, *, token: str | None, kind: str = "image/jpeg", query: str = ""
) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/describe{query}", data=body, method="POST"
    )
    request.add_header("Content-Type", kind)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:  # aiohttp's own plain-text answer (a body over the size cap)
            return err.code, {"text": raw.decode(errors="replace")}


async def test_describe_answers_with_the_observation(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    chair = HazardInfo(label="chair", direction="ahead", distance_m=1.0)
    vision = ScriptedAnalyzerDouble([(observation(chair, answer="It is open."), 0.0)])
    server = await make_server(vision, describe_port=0)
    assert server.describe_port
    status, body = await asyncio.to_thread(
        post,
        server.describe_port,
        jpeg_bytes(640, 480),
        token=accounts.user_token,
        query="?question=is+the+door+open&language=en",
    )
    assert status == 200, body
    assert body["hazards"] == [
        {"label": "chair", "direction": "ahead", "distance_m": 1.0, "urgency": "normal"}
    ]
    assert body["answer"] == "It is open." and "total_ms" in body["timings"]
    assert vision.requests[0].question == "is the door open"


async def test_describe_refuses_bad_tokens_roles_and_frames(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), describe_port=0)
    port = server.describe_port
    assert port
    good = jpeg_bytes(64, 48)
    cases = [
        (good, None, "image/jpeg", 401, "auth-failed"),
        (good, "sa_x_y", "image/jpeg", 401, "auth-failed"),
        (good, accounts.caregiver_token, "image/jpeg", 403, "forbidden"),
        (b"not a jpeg at all", accounts.user_token, "image/jpeg", 400, "bad-message"),
        (good, accounts.user_token, "text/plain", 415, "unsupported-format"),
        (b"\xff\xd8" + b"\x00" * 2_000_000, accounts.user_token, "image/jpeg", 413, None),
    ]
    for body, token, kind, status, code in cases:
        got, answer = await asyncio.to_thread(post, port, body, token=token, kind=kind)
        assert got == status, (kind, token, answer)
        if code is not None:
            assert answer["error"]["code"] == code


BOUNDARY = "seealoud-test-boundary"


def multipart(fields: dict[str, tuple[bytes, str | None]]) -> bytes:
    """A multipart/form-data body: name -> (bytes, content type or None for text)."""
    out = b""
    for name, (data, kind) in fields.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        if kind:
            out += f'; filename="{name}.jpg"\r\nContent-Type: {kind}'.encode()
        out += b"\r\n\r\n" + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


KEYS = {"hazards", "signs", "scene", "answer", "partial", "view", "view_reason", "timings"}


def dark_jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (3, 3, 3)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


async def test_multipart_with_question_and_language_parts(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    vision = ScriptedAnalyzerDouble([(observation(answer="Oui."), 0.0)])
    server = await make_server(vision, describe_port=0)
    assert server.describe_port
    body = multipart(
        {
            "image": (jpeg_bytes(640, 480), "image/jpeg"),
            "question": (b"la porte est-elle ouverte ?", None),
            "language": (b"fr", None),
        }
    )
    status, answer = await asyncio.to_thread(
        post,
        server.describe_port,
        body,
        token=accounts.user_token,
        kind=f"multipart/form-data; boundary={BOUNDARY}",
    )
    assert status == 200, answer
    assert set(answer) == KEYS and answer["answer"] == "Oui." and answer["view"] == "ok"
    request = vision.requests[0]
    assert request.language == "fr" and request.question == "la porte est-elle ouverte ?"
    # No image part: the documented error.
    status, answer = await asyncio.to_thread(
        post,
        server.describe_port,
        multipart({"question": (b"hello", None)}),
        token=accounts.user_token,
        kind=f"multipart/form-data; boundary={BOUNDARY}",
    )
    assert status == 400 and answer["error"]["code"] == "bad-message"


async def test_every_answer_has_the_same_keys_and_a_question_is_never_left_blank(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    """An empty look without a question keeps partial and model_ms; a question the model
    left unanswered gets the session's "I'm not sure", in the request's language."""
    vision = ScriptedAnalyzerDouble([(None, 0.0), (observation(), 0.0)])
    server = await make_server(vision, describe_port=0)
    port = server.describe_port
    assert port
    status, empty = await asyncio.to_thread(post, port, jpeg_bytes(), token=accounts.user_token)
    assert status == 200 and set(empty) == KEYS, empty
    assert empty["partial"] is False and empty["answer"] is None
    assert isinstance(empty["timings"]["model_ms"], int)
    for language, unsure in (("en", "I'm not sure."), ("fr", "Je ne suis pas sûr.")):
        status, body = await asyncio.to_thread(
            post,
            port,
            jpeg_bytes(),
            token=accounts.user_token,
            query=f"?question=what+is+this&language={language}",
        )
        assert status == 200 and set(body) == KEYS and body["answer"] == unsure, body


async def test_a_dark_frame_never_reaches_the_model(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    vision = ScriptedAnalyzerDouble([(observation(answer="invented"), 0.0)])
    server = await make_server(vision, describe_port=0)
    port = server.describe_port
    assert port
    status, body = await asyncio.to_thread(
        post, port, dark_jpeg(), token=accounts.user_token, query="?question=what+is+ahead"
    )
    assert status == 200 and set(body) == KEYS, body
    assert (body["view"], body["view_reason"]) == ("nothing-to-see", "dark")
    assert body["answer"] == "The camera sees nothing: it may be covered or it is too dark."
    assert body["timings"]["model_ms"] is None
    status, body = await asyncio.to_thread(post, port, dark_jpeg(), token=accounts.user_token)
    assert status == 200 and body["answer"] is None and body["view_reason"] == "dark"
    assert vision.requests == []


async def test_one_request_at_a_time_per_account_even_when_sent_together(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    """Five requests at once (each reads the account's language from the store, an await
    that once let the others past the busy check): one reaches the model, four are told
    busy, and the slot is free again afterwards."""
    vision = GatedAnalyzerDouble()
    server = await make_server(vision, describe_port=0)
    port = server.describe_port
    assert port
    frame = jpeg_bytes(64, 48)
    sent = [
        asyncio.ensure_future(asyncio.to_thread(post, port, frame, token=accounts.user_token))
        for _ in range(5)
    ]
    await asyncio.wait_for(vision.started.wait(), 10)
    pending: set[asyncio.Future[tuple[int, dict]]] = set(sent)
    async with asyncio.timeout(5):  # the four refused ones answer while the first is held
        while len(pending) > 1:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    early = [t.result() for t in sent if t not in pending]
    vision.release()
    results = await asyncio.gather(*sent)
    assert len(vision.requests) == 1, f"{len(vision.requests)} reached the model"
    assert len(early) == 4 and all(s == 429 and b["error"]["code"] == "busy" for s, b in early)
    assert sorted(s for s, _ in results) == [200, 429, 429, 429, 429]
    status, _ = await asyncio.to_thread(post, port, frame, token=accounts.user_token)
    assert status == 200  # the slot was given back


async def test_the_minute_limit_and_an_oversize_body_answer_in_json(
    make_server: ServerFactory, accounts: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.describe as describe

    monkeypatch.setattr(describe, "RATE_PER_MINUTE", 3)
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), describe_port=0)
    port = server.describe_port
    assert port
    frame = jpeg_bytes(64, 48)
    got = [
        (await asyncio.to_thread(post, port, frame, token=accounts.user_token)) for _ in range(4)
    ]
    assert [s for s, _ in got] == [200, 200, 200, 429]
    assert got[3][1]["error"]["code"] == "rate-limited"
    # Over the size cap (frame bytes + 64 KiB of headroom): JSON, not aiohttp's plain 413.
    huge = b"\xff\xd8" + b"\x00" * (server.config.max_frame_bytes + 100_000)
    status, body = await asyncio.to_thread(post, port, huge, token=accounts.user_token)
    assert status == 413 and body["error"]["code"] == "frame-too-large", body


async def test_describe_speaks_https_with_the_servers_certificate(
    make_server: ServerFactory, accounts: Accounts, tmp_path: Path
) -> None:
    import ssl

    from server.cert import make_certificate
    from server.describe import start_describe

    cert, key = make_certificate(tmp_path, names=["localhost"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server = await make_server(ScriptedAnalyzerDouble([(observation(scene="A hall."), 0.0)]))
    runner = await start_describe(server.ctx, "127.0.0.1", 0, ssl_context=server_ctx)
    try:
        port = int(runner.addresses[0][1])
        client_ctx = ssl.create_default_context(cafile=str(cert))
        client_ctx.check_hostname = False

        def post_https() -> tuple[int, dict]:
            request = urllib.request.Request(
                f"https://127.0.0.1:{port}/v1/describe", data=jpeg_bytes(), method="POST"
            )
            request.add_header("Content-Type", "image/jpeg")
            request.add_header("Authorization", f"Bearer {accounts.user_token}")
            with urllib.request.urlopen(request, timeout=10, context=client_ctx) as resp:
                return resp.status, json.loads(resp.read())

        status, body = await asyncio.to_thread(post_https)
        assert status == 200 and body["scene"] == "A hall."
        # Plain http on that port: the TLS handshake fails, nothing is described.
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            await asyncio.to_thread(post, port, jpeg_bytes(), token=accounts.user_token)
    finally:
        await runner.cleanup()


async def test_a_failed_model_call_gives_the_slot_back(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server(FailingAnalyzerDouble(), describe_port=0)
    port = server.describe_port
    assert port
    for _ in range(2):  # the second is not told "busy": the first one's slot was released
        status, body = await asyncio.to_thread(post, port, jpeg_bytes(), token=accounts.user_token)
        assert status == 502 and body["error"]["code"] == "model-failed", body


async def test_malformed_bodies_get_json_errors_and_no_traceback(
    make_server: ServerFactory, accounts: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    """What an attacker with a valid token sent: a multipart without a boundary, one cut
    short, a nested multipart, a JPEG of thousands of scans, a 30 KB URL."""
    from PIL import Image

    from tests.attacker import many_scans

    server = await make_server(ScriptedAnalyzerDouble([(observation(), 0.0)]), describe_port=0)
    port = server.describe_port
    assert port
    token = accounts.user_token
    nested = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"\r\n'
        f"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\n\r\nx\r\n--inner--\r\n"
        f"--{BOUNDARY}--\r\n"
    ).encode()
    cut = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc'.encode()
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 120, 200)).save(buf, "JPEG", progressive=True)
    for body, kind in (
        (b"x", "multipart/form-data"),
        (cut, f"multipart/form-data; boundary={BOUNDARY}"),
        (nested, f"multipart/form-data; boundary={BOUNDARY}"),
        (many_scans(buf.getvalue(), 2000), "image/jpeg"),
    ):
        status, answer = await asyncio.to_thread(post, port, body, token=token, kind=kind)
        assert status == 400 and answer["error"]["code"] == "bad-message", (kind, answer)
    status, _ = await asyncio.to_thread(
        post, port, jpeg_bytes(64, 48), token=token, query="?question=" + "x" * 30_000
    )
    assert status == 400
    assert not [r for r in caplog.records if r.exc_info]  # no traceback in the log
    assert "xxxxxxxxxx" not in caplog.text  # nor the client's bytes
