"""Per-session rate limits, end to end on real sockets: a client that floods frames,
audio, questions or settings loses only its own excess, is told once with
``rate-limited``, and is counted in ``/metrics``."""

from __future__ import annotations

import gc
import io
import time

import numpy as np
import pytest
from PIL import Image

import protocol as p
from protocol import ErrorCode, encode
from server.config import ConfigError, ServerConfig
from server.ratelimit import PROGRESSIVE_COST, AccountBudgets, frame_cost
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


def _heavy_jpeg(width: int, height: int, *, progressive: bool) -> bytes:
    """The heaviest frame the pixel cap lets in: costly to decode at any scale."""
    rng = np.random.default_rng(5)
    small = rng.integers(0, 255, size=(height // 16, width // 16, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70, progressive=progressive)
    return buf.getvalue()


async def test_one_accounts_heavy_frames_are_limited_across_its_sessions_not_anyone_elses(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    """Alice's two sessions share one decode budget: a 4 MP progressive frame spends
    it (it counts as 52 640x480 frames), the next ones from either session are
    dropped and each session is told; Bob's frames, sent meanwhile, all go through."""
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), change_detection=False)
    heavy = _heavy_jpeg(2000, 2000, progressive=True)
    first = await Phone.open(ws_url(server), accounts.user_token)
    second = await Phone.open(ws_url(server), accounts.user_token)
    bob = await Phone.open(ws_url(server), accounts.other_token)
    normal = jpeg_bytes(640, 480)
    for seq in range(3):
        for phone in (first, second):
            frame = p.CameraFrame(seq=seq, ts=seq, width=2000, height=2000, payload=heavy)
            await phone.send(frame)
        await bob.send(p.CameraFrame(seq=seq, ts=seq, width=640, height=480, payload=normal))
    for phone, tag in ((first, "a"), (second, "b"), (bob, "c")):
        await _settle(phone, tag)
    told = _limited(first) + _limited(second)
    assert len(_limited(first)) == 1 and len(_limited(second)) == 1, told
    assert all("counts as 52.1" in e.message and "send 640x480" in e.message for e in told)
    assert server.metrics.count("rate").get("frame-cost") == 5  # six heavy, one taken
    assert _limited(bob) == [] and not bob.of(p.Error)
    for phone in (first, second, bob):
        await phone.close()


async def test_the_frame_budget_covers_a_phone_at_full_rate() -> None:
    """A phone's 640x480 frames at the per-session cap (30 a second) never meet the
    account budget; 720p at 15 fps fits too; 1080p at 10 fps does not, in steady state."""
    budgets = AccountBudgets.for_frames(ServerConfig().account_frame_rate, 4_000_000, 1_000_000, 16)
    for (w, h), fps, fits in (
        ((640, 480), 30, True),
        ((1280, 720), 15, True),
        ((1920, 1080), 10, False),
    ):
        bucket = budgets.take(f"{w}x{h}")
        cost = frame_cost(w, h)
        taken = sum(bucket.allow(n / fps, cost) for n in range(fps * 20))
        assert (taken == fps * 20) is fits, (w, h, taken)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="account_frame_rate"):
            ServerConfig(account_frame_rate=bad)


def test_an_accounts_budget_is_shared_by_its_sessions_and_goes_with_the_last() -> None:
    budgets = AccountBudgets.for_frames(48.0, 4_000_000, 1_000_000, 16)
    one, two = budgets.take("alice"), budgets.take("alice")
    assert one is two and budgets.take("bob") is not one
    assert budgets.burst >= frame_cost(4_000_000, 1, scans=16)  # the largest can pass
    assert AccountBudgets.for_frames(48.0, 4_000_000, 10_000_000, 16).burst == 640.0
    del one, two
    gc.collect()
    assert len(budgets) == 0  # bob's was never kept either
    assert frame_cost(640, 480) == 1.0
    assert frame_cost(640, 480, scans=10) == PROGRESSIVE_COST  # libjpeg's progressive
    # found by attacker passes: 925 KB of noise at 640x480 cost 2.5-4x a camera frame to
    # decode; 16 scans of successive approximation more than 4x; tiny frames almost nothing
    assert frame_cost(640, 480, size=925_000) == 9.25
    assert frame_cost(640, 480, size=60_000) == 1.0  # a camera's frame
    assert frame_cost(640, 480, scans=16, size=236_000) == 2.36 * 16 / 2.5
    assert frame_cost(8, 8) == frame_cost(1, 1) == frame_cost(8, 2048) == 1.0
