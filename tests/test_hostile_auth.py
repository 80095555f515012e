"""Hostile clients against accounts and limits: token guessing, floods, session hoarding.

The limiters are pure logic with the clock passed in, so these tests script the
clock: no sleeps, exact figures.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

import protocol as p
from protocol import ErrorCode, decode, encode
from server.auth import UserStore
from server.db import connect
from server.ratelimit import (
    FailedLogins,
    LoginLimiter,
    LoginLimitOptions,
    LogThrottle,
    RateLimiter,
    SessionCap,
    SessionLimiters,
    SessionLimits,
    TooManySessions,
    address_key,
)
from tests.conftest import Accounts, ServerFactory


def _bad_token() -> str:
    return f"sa_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def test_two_thousand_bad_tokens_block_the_attacker_not_the_good_user(tmp_path: Path) -> None:
    """What the handshake does per hello, against the real account store."""
    store = UserStore(connect(tmp_path / "a.db"))
    good = store.add("alice")
    limiter = FailedLogins()
    attacker, user = address_key("192.0.2.66"), address_key("198.51.100.7")
    now = 1000.0
    checked = refused = warnings = suppressed = 0
    blocks: list[float] = []
    good_logins = 0
    for i in range(2000):
        now += 0.001  # 1,000 tries a second
        if limiter.blocked_for(attacker, now) > 0:
            refused += 1  # answered `rate-limited` without touching the token store
        else:
            checked += 1
            assert store.authenticate(_bad_token()) is None
            failure = limiter.failure(attacker, now)
            warnings += failure.log
            suppressed += failure.suppressed
            if failure.blocked_for_s:
                blocks.append(failure.blocked_for_s)
        if i % 100 == 0:  # the good user, from elsewhere, meanwhile
            assert limiter.blocked_for(user, now) == 0.0
            account = store.authenticate(good)
            assert account is not None and account.name == "alice"
            limiter.success(user, now)
            good_logins += 1
    assert good_logins == 20
    # 2 s of attack: 5 free tries, then waits of 1 s, 2 s, ... : 7 tokens checked in all
    assert checked == 7 and refused == 1993
    assert blocks == [1.0, 2.0]
    assert limiter.blocked_for(attacker, now) > 0
    assert warnings == 1  # one WARNING in the first minute, not 2,000
    # A minute later the next WARNING says how many attempts it stands for.
    now += 61
    later = limiter.failure(attacker, now)
    # 1,999 unlogged tries of the attack and the probe just above
    assert later.log and later.suppressed == 2000 and later.blocked_for_s == 4.0
    # The waits keep doubling up to the cap while the attack goes on.
    for _ in range(12):
        now += limiter.blocked_for(attacker, now)
        blocks.append(limiter.failure(attacker, now).blocked_for_s)
    assert blocks[-1] == LoginLimitOptions().max_delay_s
    assert blocks[2:6] == [8.0, 16.0, 32.0, 64.0]


def test_login_limiter_for_the_handshake() -> None:
    limiter = LoginLimiter(LoginLimitOptions(free_failures=1))
    assert limiter.retry_after("2001:db8::1", 0.0) == 0.0
    assert limiter.failed("2001:db8::1", 0.0)  # the first failure is logged
    assert not limiter.failed("2001:db8::2", 0.1)  # same /64: same attacker, held back
    assert limiter.last is not None and limiter.last.blocked_for_s == 1.0
    assert limiter.retry_after("2001:db8::3", 0.5) == pytest.approx(0.6)
    assert limiter.retry_after("192.0.2.1", 0.5) == 0.0  # someone else
    limiter.succeeded("2001:db8::9")  # a good token from that /64 lifts no wait
    assert limiter.retry_after("2001:db8::1", 0.5) == pytest.approx(0.6)
    assert limiter.retry_after("2001:db8::1", 1.2) == 0.0  # the wait ends on schedule


def test_failed_login_memory_is_bounded() -> None:
    limiter = FailedLogins(LoginLimitOptions(max_addresses=1000))
    for i in range(50_000):
        limiter.failure(address_key(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"), float(i))
    assert len(limiter) == 1000
    assert len(limiter._log) <= 1000


def test_quiet_addresses_are_forgotten_and_a_good_login_gives_no_free_guesses() -> None:
    limiter = FailedLogins(LoginLimitOptions(free_failures=1, forget_after_s=900))
    limiter.failure("a", 0.0)
    assert limiter.failure("a", 1.0).blocked_for_s == 1.0
    assert limiter.blocked_for("a", 1.5) == pytest.approx(0.5)
    assert limiter.failure("a", 2000.0).blocked_for_s == 0.0  # forgotten: a free try again
    limiter.success("a", 2001.0)  # someone with one valid token...
    assert limiter.failure("a", 2002.0).blocked_for_s == 1.0  # ...still waits to guess more


def test_address_keys() -> None:
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    # every address in one /64 is one attacker
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("not an address") == "not an address"


def test_tokens_and_names_are_full_matches(tmp_path: Path) -> None:
    store = UserStore(connect(tmp_path / "a.db"))
    token = store.add("alice")
    assert store.authenticate(token) is not None
    for bad in (token + "\n", "\n" + token, token + "\x00", " " + token, token + " "):
        assert store.authenticate(bad) is None, repr(bad)
    with pytest.raises(Exception, match="invalid name"):
        store.add("bob\n")


def test_log_throttle() -> None:
    throttle = LogThrottle(interval_s=60, max_keys=2)
    assert throttle.note("a", 0) == 0
    assert [throttle.note("a", t) for t in (1, 2, 3)] == [None, None, None]
    assert throttle.note("a", 61) == 3
    throttle.note("b", 62)
    throttle.note("c", 63)  # "a" is the least recently seen: forgotten
    assert len(throttle) == 2 and throttle.note("a", 64) == 0


def test_token_bucket() -> None:
    bucket = RateLimiter(rate_per_s=2, burst=3)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after(0.0) == pytest.approx(0.5)
    assert bucket.allow(0.5) and not bucket.allow(0.5)
    assert bucket.allow(100.0, cost=3) and not bucket.allow(100.0)  # refills only to burst
    assert bucket.retry_after(100.0, cost=4) == float("inf")
    assert not bucket.allow(99.0)  # a clock going backwards gives nothing
    assert bucket.refused == 4


def test_session_limiters_per_kind() -> None:
    limits = SessionLimiters.build(SessionLimits(frames_per_s=8, frames_burst=8))
    sent = sum(limits.allow("frames", t / 64) for t in range(129))  # 64 fps for 2 s
    assert sent == 8 + 16  # the burst, then 8 a second
    assert limits.refused == {"frames": 129 - 24}
    # audio by bytes: 5 s of 16 kHz PCM16 at once is fine, 10 s is not
    assert limits.allow("audio", 0.0, cost=160_000)
    assert not limits.allow("audio", 0.0, cost=32_000)
    unlimited = SessionLimiters.build(SessionLimits(questions_per_s=None))
    assert all(unlimited.allow("questions", 0.0) for _ in range(1000))


def test_session_cap_per_account_and_address() -> None:
    cap = SessionCap(per_account=2, per_address=3)
    one, two = cap.admit("alice", "10.0.0.1"), cap.admit("alice", "10.0.0.2")
    with pytest.raises(TooManySessions) as refused:
        cap.admit("alice", "10.0.0.3")
    assert refused.value.scope == "account" and refused.value.limit == 2
    cap.admit("bob", "10.0.0.9")
    cap.admit("carol", "10.0.0.9")
    cap.admit("dave", "10.0.0.9")
    with pytest.raises(TooManySessions) as refused:
        cap.admit("erin", "10.0.0.9")
    assert refused.value.scope == "address"
    one.release()
    one.release()  # idempotent: a double release frees nothing more
    assert cap.open_sessions(account="alice") == 1
    cap.admit("alice", "10.0.0.3")
    two.release()
    assert cap.open_sessions(address="10.0.0.2") == 0
    assert cap.open_sessions() == 4  # bob, carol, dave and the second alice


def test_behind_a_trusted_proxy_the_client_address_is_the_forwarded_one() -> None:
    from server.ratelimit import client_address

    proxies = ["10.0.0.2"]
    assert client_address("10.0.0.2", "203.0.113.7", proxies) == "203.0.113.7"
    assert client_address("10.0.0.2", "198.51.100.1, 203.0.113.7", proxies) == "203.0.113.7"
    assert client_address("10.0.0.2", "203.0.113.7, 10.0.0.2", proxies) == "203.0.113.7"
    # Anyone else's header is ignored (it could be forged), and so is a malformed one.
    assert client_address("192.0.2.9", "203.0.113.7", proxies) == "192.0.2.9"
    assert client_address("10.0.0.2", "evil\n203.0.113.7", proxies) == "10.0.0.2"
    assert client_address("10.0.0.2", None, proxies) == "10.0.0.2"


async def test_one_guesser_behind_the_proxy_does_not_slow_another_client(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    server = await make_server(trusted_proxies=["127.0.0.1"])
    url = f"ws://127.0.0.1:{server.port}/ws"
    for _ in range(8):  # past the free failures: this address now waits
        async with ws_connect(url, additional_headers={"X-Forwarded-For": "203.0.113.66"}) as ws:
            await ws.send(encode(p.Hello(protocol=1, token="sa_1_" + "x" * 43)))
            await ws.recv()
    async with ws_connect(url, additional_headers={"X-Forwarded-For": "203.0.113.66"}) as ws:
        await ws.send(encode(p.Hello(protocol=1, token=accounts.user_token)))
        refused = decode(await ws.recv())
        assert isinstance(refused, p.Error) and refused.code == ErrorCode.RATE_LIMITED
    async with ws_connect(url, additional_headers={"X-Forwarded-For": "198.51.100.5"}) as ws:
        await ws.send(encode(p.Hello(protocol=1, token=accounts.user_token)))
        assert isinstance(decode(await ws.recv()), p.Ready)  # another client, same proxy
