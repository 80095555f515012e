"""Per-session rate limits, end to end on real sockets: a client that floods frames,
audio, questions or settings loses only its own excess, is told once with
``rate-limited``, and is counted in ``/metrics``."""

from __future__ import annotations

import time

import protocol as p
from protocol import ErrorCode, encode
from tests.conftest import Accounts, ServerFactory, jpeg_bytes, ws_url
from tests.doubles import ScriptedAnalyzerDouble
from tests.phone import Phone, observation


def _limited(phone: Phone) -> list[p.Error]:
    return [e for e in phone.of(p.Error) if e.code == ErrorCode.RATE_LIMITED]


async def _settle(phone: Phone, tag: str) -> None:
    """Everything sent before this ping has been handled when its pong comes back."""
    await phone.send(p.Ping(t=0, id=tag))
    await phone.wait_for(lambda m: isinstance(m, p.Pong) and m.id == tag)


async def test_a_frame_flood_keeps_only_the_allowed_burst(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), change_detection=False)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    data = jpeg_bytes(64, 48)
    for seq in range(200):  # far faster than any camera
        await phone.ws.send(
            encode(p.CameraFrame(seq=seq, ts=seq, width=64, height=48, payload=data))
        )
    await _settle(phone, "frames")
    assert len(_limited(phone)) == 1  # told once, not 170 times
    assert 30 <= server.metrics.frames_received < 60  # the burst, plus what refilled
    assert server.metrics.count("rate").get("frames", 0) >= 140
    await phone.close()


async def test_a_question_flood_is_answered_only_up_to_the_burst(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    vision = ScriptedAnalyzerDouble([(observation(answer="Yes."), 0.0)])
    server = await make_server(vision)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame()
    for n in range(10):
        await phone.send(p.Question(text=f"question {n}?", id=f"q{n}"))
    await _settle(phone, "questions")
    limited = _limited(phone)
    assert len(limited) == 1 and limited[0].ref == "q3"  # three at once, then refused
    assert server.metrics.count("rate").get("questions") == 7
    await phone.close()


async def test_an_audio_flood_is_cut_at_twice_real_time(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]))
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.send(p.AudioStart(id="a"))
    chunk = bytes(3200)  # 100 ms of 16 kHz PCM16
    for seq in range(200):  # 20 s of audio sent at once
        await phone.send(p.AudioChunk(seq=seq, ts=seq * 100, payload=chunk))
    await _settle(phone, "audio")
    assert len(_limited(phone)) == 1
    refused = server.metrics.count("rate").get("audio", 0)
    assert 140 <= refused <= 155  # 5 s of burst (50 chunks) taken, the rest refused
    await phone.close()


async def test_a_settings_flood_from_a_caregiver_is_refused_beyond_the_burst(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]))
    carer = await Phone.open(ws_url(server), accounts.caregiver_token)
    for n in range(30):
        await carer.send(p.SettingsGet(user="alice", id=f"g{n}"))
    await _settle(carer, "settings")
    answered = [m for m in carer.of(p.Settings) if m.id and m.id.startswith("g")]
    assert 10 <= len(answered) <= 12  # the burst, plus what refilled meanwhile
    assert len(_limited(carer)) == 1
    await carer.close()


async def test_a_message_flood_is_read_at_a_phones_pace(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    """1,200 pings at once: the first 600 (the burst) at once, the rest at 300 a second,
    so a flooder takes its own time, not everyone's."""
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]))
    flooder = await Phone.open(ws_url(server), accounts.caregiver_token)
    started = time.monotonic()
    for n in range(1200):
        await flooder.ws.send(encode(p.Ping(t=n, id=str(n))))
    await flooder.wait_for(lambda m: isinstance(m, p.Pong) and m.id == "1199", timeout=20)
    took = time.monotonic() - started
    assert took >= 1.5, took  # (1200 - 600) / 300 s = 2 s, less a little refill
    assert server.metrics.count("rate").get("messages") == 1  # counted once per session
    await flooder.close()
