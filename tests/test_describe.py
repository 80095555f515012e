"""POST /v1/describe on a real port: token, limits, a JPEG in, the observation out."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from protocol import HazardInfo
from tests.conftest import Accounts, ServerFactory, jpeg_bytes
from tests.doubles import ScriptedAnalyzerDouble
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
