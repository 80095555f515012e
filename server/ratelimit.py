"""Rate limits and caps: failed logins, per-session message rates, sessions per account.

Pure logic with the clock passed in (``now``: ``time.monotonic()`` seconds), like
the narrator: no asyncio, no threads, no I/O, so tests script the clock. Each
object is meant to be used from one thread (the event loop); none blocks.

- :class:`FailedLogins` -- per source address, exponential backoff after a few
  failed logins; bounded memory (LRU over addresses); tells the caller when to
  log so that an attack writes one WARNING per address per minute.
  :class:`LoginLimiter` puts it behind the handshake's interface.
- :class:`LogThrottle` -- that log-line suppression, for any key.
- :class:`RateLimiter` -- a token bucket (``allow(now)``); :class:`SessionLimits`
  and :class:`SessionLimiters` bundle one per kind of client message.
- :class:`SessionCap` -- sessions per account and per source address.
- :class:`AccountBudgets` -- one bucket per account shared by its sessions, for
  what costs the whole server (decoding camera frames, see :func:`frame_cost`).

Exceptions::

    RateLimitError
     └── TooManySessions
"""

from __future__ import annotations

import ipaddress
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field


class RateLimitError(Exception):
    """Base of the errors here; the message is safe to send to the client."""


class TooManySessions(RateLimitError):
    """A session cap is reached. ``scope`` is ``"account"`` or ``"address"``."""

    def __init__(self, message: str, *, scope: str, limit: int) -> None:
        super().__init__(message)
        self.scope = scope
        self.limit = limit


def address_key(address: str) -> str:
    """The key an address is limited under: an IPv4 address as is (also when mapped
    into IPv6), an IPv6 address by its /64 (one host usually owns a whole /64).
    Anything unparsable is used as given (e.g. a Unix socket path)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: list[str]) -> str:
    """The client's address: ``peer``, or, when ``peer`` is a trusted reverse proxy, the
    nearest address in its ``X-Forwarded-For`` that is not a trusted proxy. Behind a
    proxy every client has the proxy's address, so one bad client would otherwise get
    everyone's logins slowed; a header from anyone else is ignored (it can be forged).
    Only a full IP address is taken from the header."""
    if not forwarded_for or peer not in trusted_proxies:
        return peer
    for hop in reversed(forwarded_for.split(",")[-8:]):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed header: do not guess
        if hop not in trusted_proxies:
            return hop
    return peer


# --- log-line suppression ----------------------------------------------------


class LogThrottle:
    """At most one log line per key per ``interval_s``, and how many were held back.

    ``note(key, now)`` returns ``None`` when the caller should stay silent, else the
    number of events suppressed since the last line for that key (say it in the
    line: "... (37 more since the last warning)"). At most ``max_keys`` keys are
    remembered (least recently seen forgotten first).
    """

    def __init__(self, *, interval_s: float = 60.0, max_keys: int = 10_000) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._keys: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def note(self, key: str, now: float) -> int | None:
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval_s:
            self._keys[key] = (entry[0], entry[1] + 1)
            self._keys.move_to_end(key)
            return None
        suppressed = entry[1] if entry is not None else 0
        self._keys[key] = (now, 0)
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return suppressed

    def hold_back(self, key: str) -> None:
        """Count an event for ``key`` that is not to be logged on its own (it shows up
        in the next line's count). Does nothing for a key not seen yet."""
        entry = self._keys.get(key)
        if entry is not None:
            self._keys[key] = (entry[0], entry[1] + 1)

    def __len__(self) -> int:
        return len(self._keys)


# --- failed logins -------------------------------------------------------------


@dataclass(kw_only=True)
class LoginLimitOptions:
    """How failed logins from one source address are slowed down.

    Attributes:
        free_failures: Failures allowed before any wait.
        base_delay_s: The first wait; each further failure doubles it.
        max_delay_s: The longest wait.
        forget_after_s: An address with no failure for this long starts afresh.
        max_addresses: Addresses remembered at most (least recently seen
            forgotten first): bounded memory whatever the attacker does.
        log_interval_s: One WARNING per address per this long.
    """

    free_failures: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    forget_after_s: float = 900.0
    max_addresses: int = 10_000
    log_interval_s: float = 60.0


@dataclass(frozen=True, kw_only=True)
class LoginFailure:
    """What to do after a failed login.

    Attributes:
        blocked_for_s: The address is refused (``rate-limited``) for this long
            (0 while it still has free tries).
        failures: Failures counted for this address.
        log: Whether to write the WARNING line now.
        suppressed: Failures and refused attempts from this address not logged
            since the last line.
    """

    blocked_for_s: float
    failures: int
    log: bool
    suppressed: int


@dataclass
class _Address:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0


class FailedLogins:
    """Exponential backoff of failed logins per source address.

    Use from the handshake, per hello::

        key = address_key(peer_ip)
        wait = limiter.blocked_for(key, now)
        if wait > 0: refuse with `rate-limited` (retry after `wait`), do not check the token
        account = store.authenticate(token)
        if account is None:
            failure = limiter.failure(key, now)
            if failure.log: log.warning("... from %s (%d similar suppressed)", ...)
        else:
            limiter.success(key, now)  # failures kept: a good token is no licence to guess

    Attempts refused while blocked do not lengthen the block (the attacker
    learns nothing and the wait ends on schedule); they are counted in
    ``refused`` for the metrics and in the next WARNING's ``suppressed``. A
    good user from another address is never affected: state is per address.
    """

    def __init__(self, options: LoginLimitOptions | None = None) -> None:
        self.options = options or LoginLimitOptions()
        self._addresses: OrderedDict[str, _Address] = OrderedDict()
        self._log = LogThrottle(
            interval_s=self.options.log_interval_s, max_keys=self.options.max_addresses
        )
        self.refused = 0

    def blocked_for(self, key: str, now: float) -> float:
        """Seconds this address must still wait (0.0: let it try). Counts a refusal."""
        entry = self._lookup(key, now)
        if entry is None or entry.blocked_until <= now:
            return 0.0
        self.refused += 1
        self._log.hold_back(key)
        return entry.blocked_until - now

    def failure(self, key: str, now: float) -> LoginFailure:
        """Record a failed login from ``key``."""
        opts = self.options
        entry = self._lookup(key, now)
        if entry is None:
            entry = _Address()
            self._addresses[key] = entry
            while len(self._addresses) > opts.max_addresses:
                self._addresses.popitem(last=False)
        entry.failures += 1
        entry.last_failure = now
        over = entry.failures - opts.free_failures
        delay = 0.0
        if over > 0:
            delay = min(opts.max_delay_s, opts.base_delay_s * 2.0 ** min(over - 1, 60))
            entry.blocked_until = now + delay
        suppressed = self._log.note(key, now)
        return LoginFailure(
            blocked_for_s=delay,
            failures=entry.failures,
            log=suppressed is not None,
            suppressed=suppressed or 0,
        )

    def success(self, key: str, now: float | None = None) -> None:
        """A good token from ``key``: its failures are kept all the same (they are
        forgotten ``forget_after_s`` after the last one). Forgetting them here would give
        whoever holds one valid token ``free_failures`` free guesses after every login."""

    def __len__(self) -> int:
        return len(self._addresses)

    def _lookup(self, key: str, now: float) -> _Address | None:
        entry = self._addresses.get(key)
        if entry is None:
            return None
        if now - entry.last_failure >= self.options.forget_after_s and entry.blocked_until <= now:
            del self._addresses[key]
            return None
        self._addresses.move_to_end(key)
        return entry


class LoginLimiter:
    """:class:`FailedLogins` behind the handshake's interface
    (``server.context.LoginLimiter``): ``peer`` is the client's IP address as a
    string, keyed by :func:`address_key` here.

    ``failed()`` returns whether to log; ``last`` is the :class:`LoginFailure`
    it decided from, so the line can say how many it stands for::

        if limiter.failed(peer, now):
            log.warning("authentication failed from %s (%d more since the last warning)",
                        peer, limiter.last.suppressed if limiter.last else 0)
    """

    def __init__(self, options: LoginLimitOptions | None = None) -> None:
        self.logins = FailedLogins(options)
        self.last: LoginFailure | None = None

    def retry_after(self, peer: str, now: float) -> float:
        """Seconds ``peer`` must wait before trying again (0: may try now)."""
        return self.logins.blocked_for(address_key(peer), now)

    def failed(self, peer: str, now: float) -> bool:
        """Count a failure; whether it deserves a log line (one per address per minute)."""
        self.last = self.logins.failure(address_key(peer), now)
        return self.last.log

    def succeeded(self, peer: str) -> None:
        self.logins.success(address_key(peer))


# --- token buckets -------------------------------------------------------------


class RateLimiter:
    """A token bucket: ``rate_per_s`` on average, bursts up to ``burst``.

    ``allow(now, cost)`` takes ``cost`` tokens if there are enough and says
    whether it did; ``retry_after(now, cost)`` says how long until it would.
    The bucket starts full.
    """

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("rate_per_s and burst must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None
        self.refused = 0

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        if self._at is None or now > self._at:
            self._at = now

    def allow(self, now: float, cost: float = 1.0) -> bool:
        self._refill(now)
        if cost <= self._tokens:
            self._tokens -= cost
            return True
        self.refused += 1
        return False

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``allow(now, cost)`` would pass (inf if ``cost > burst``)."""
        self._refill(now)
        if cost > self.burst:
            return float("inf")
        return max(0.0, (cost - self._tokens) / self.rate_per_s)


@dataclass(kw_only=True)
class SessionLimits:
    """Per-session rates for what a client sends; ``None`` turns a limit off.

    Attributes:
        frames_per_s: Camera frames (a phone sends 1-15 fps; the newest wins anyway).
        frames_burst: Frames allowed at once after a quiet spell.
        audio_bytes_per_s: Microphone PCM bytes (16 kHz PCM16 is 32,000 B/s:
            the default allows twice real time, for catching up after a stall).
        audio_burst_bytes: Audio allowed at once (default: 5 s of audio).
        questions_per_s: Questions (typed or a finished spoken one).
        questions_burst: Questions allowed at once.
        settings_per_s: Settings reads and updates (caregiver page).
        settings_burst: Settings messages allowed at once.
    """

    frames_per_s: float | None = 30.0
    frames_burst: float = 30.0
    audio_bytes_per_s: float | None = 64_000.0
    audio_burst_bytes: float = 160_000.0
    questions_per_s: float | None = 0.5
    questions_burst: float = 3.0
    settings_per_s: float | None = 2.0
    settings_burst: float = 10.0


@dataclass
class SessionLimiters:
    """One bucket per kind of client message, for one session (``None``: unlimited).

    ``limiters.frames.allow(now)``, ``limiters.audio.allow(now, cost=len(pcm))``,
    ``limiters.questions.allow(now)``, ``limiters.settings.allow(now)``.
    """

    frames: RateLimiter | None = None
    audio: RateLimiter | None = None
    questions: RateLimiter | None = None
    settings: RateLimiter | None = None
    refused: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, limits: SessionLimits) -> SessionLimiters:
        def bucket(rate: float | None, burst: float) -> RateLimiter | None:
            return None if rate is None else RateLimiter(rate, burst)

        return cls(
            frames=bucket(limits.frames_per_s, limits.frames_burst),
            audio=bucket(limits.audio_bytes_per_s, limits.audio_burst_bytes),
            questions=bucket(limits.questions_per_s, limits.questions_burst),
            settings=bucket(limits.settings_per_s, limits.settings_burst),
        )

    def allow(self, kind: str, now: float, cost: float = 1.0) -> bool:
        """``kind`` is ``frames``, ``audio``, ``questions`` or ``settings``."""
        limiter: RateLimiter | None = getattr(self, kind)
        if limiter is None or limiter.allow(now, cost):
            return True
        self.refused[kind] = self.refused.get(kind, 0) + 1
        return False


# --- session caps ----------------------------------------------------------------


class SessionTicket:
    """One admitted session; ``release()`` (idempotent) when it ends."""

    def __init__(self, cap: SessionCap, account: str, address: str) -> None:
        self._cap = cap
        self.account = account
        self.address = address
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._cap._release(self.account, self.address)


class SessionCap:
    """Open sessions per account and per source address key (``None``: no cap).

    ``admit(account, address)`` returns a :class:`SessionTicket` or raises
    :class:`TooManySessions`; release the ticket in the session's ``finally``.
    Memory: one counter per account or address with an open session.
    """

    def __init__(self, *, per_account: int | None = 3, per_address: int | None = 32) -> None:
        self.per_account = per_account
        self.per_address = per_address
        self._accounts: dict[str, int] = {}
        self._addresses: dict[str, int] = {}

    def admit(self, account: str, address: str) -> SessionTicket:
        if self.per_account is not None and self._accounts.get(account, 0) >= self.per_account:
            raise TooManySessions(
                f"this account already has {self.per_account} open sessions; "
                "close one (or wait for it to time out) first",
                scope="account",
                limit=self.per_account,
            )
        if self.per_address is not None and self._addresses.get(address, 0) >= self.per_address:
            raise TooManySessions(
                f"too many open sessions from this address (at most {self.per_address})",
                scope="address",
                limit=self.per_address,
            )
        self._accounts[account] = self._accounts.get(account, 0) + 1
        self._addresses[address] = self._addresses.get(address, 0) + 1
        return SessionTicket(self, account, address)

    def open_sessions(self, *, account: str | None = None, address: str | None = None) -> int:
        if account is not None:
            return self._accounts.get(account, 0)
        if address is not None:
            return self._addresses.get(address, 0)
        return sum(self._accounts.values())

    def _release(self, account: str, address: str) -> None:
        for table, key in ((self._accounts, account), (self._addresses, address)):
            left = table.get(key, 0) - 1
            if left > 0:
                table[key] = left
            else:
                table.pop(key, None)


# --- per-account budgets ---------------------------------------------------------

FRAME_UNIT_PIXELS = 640 * 480
"""The frame a phone is asked to send; frame costs are counted in these."""
PROGRESSIVE_COST = 4.0
"""A progressive JPEG costs about this many times a baseline one of its size to
decode, even at 1/8 scale (libjpeg-turbo entropy-decodes every scan in full): 39
against 9 ms for 2000x2000 with libjpeg's 10 scans, on this project's 2-core machine..."""
SCANS_PER_COST = 2.5
"""... and more with more scans: ``scans / 2.5`` when that is more (16 scans of
successive approximation at 4:4:4 cost 3.3x what 4 was charging: an attacker pass)."""
FRAME_UNIT_BYTES = 100_000
"""... or in this many bytes, whichever is more: the entropy decoding (which the 1/8
scale cannot skip) goes with the bytes. A phone's 640x480 frame is 30-90 KB; 925 KB of
noise at 640x480 (quality 98, 4:4:4, a restart marker after every block) cost 2.5-4x
a camera frame to decode and was counted as one (an attacker pass)."""
MIN_FRAME_COST = 1.0
"""Every frame costs at least one camera frame: most of the detector's work is the
same for any size (an 8x8 frame took 0.9 ms, a 640x480 one 1.2 ms), and an attacker
pass sent 8x8 and 8x8192 frames that were charged almost nothing."""


def frame_cost(width: int, height: int, *, scans: int = 1, size: int = 0) -> float:
    """A frame's decode cost in 640x480 baseline camera frames: its pixels or its
    ``size`` in bytes (over ``FRAME_UNIT_BYTES``), whichever is more, times the
    progressive factor when it has more than one scan, and at least ``MIN_FRAME_COST``
    (the detector decodes every frame; the model and the reader the ones they use)."""
    factor = max(PROGRESSIVE_COST, scans / SCANS_PER_COST) if scans > 1 else 1.0
    work = max(width * height / FRAME_UNIT_PIXELS, size / FRAME_UNIT_BYTES) * factor
    return max(MIN_FRAME_COST, work)


class AccountBudgets:
    """A token bucket per account, shared by all its sessions, so opening more
    sessions does not buy more of the machine.

    ``take(account)`` gives the account's bucket (made full on first use); a session
    keeps it for its lifetime. The table holds weak references: when an account's
    last session ends its bucket goes too, and a bucket made anew is full, which a
    kept one would be again ``burst / rate`` seconds later (a second or so): memory
    is one bucket per account with a live session, and reconnecting buys nothing
    the login limits do not already bound.
    """

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("rate_per_s and burst must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: weakref.WeakValueDictionary[str, RateLimiter] = weakref.WeakValueDictionary()

    @classmethod
    def for_frames(
        cls, rate_per_s: float, max_pixels: int, max_bytes: int, max_scans: int
    ) -> AccountBudgets:
        """Frame budgets: ``rate_per_s`` 640x480 frames a second, with room for one of
        the costliest frames the caps let in (else it could never pass)."""
        largest = frame_cost(max_pixels, 1, scans=max_scans, size=max_bytes)
        return cls(rate_per_s, max(rate_per_s, largest))

    def take(self, account: str) -> RateLimiter:
        bucket = self._buckets.get(account)
        if bucket is None:
            bucket = RateLimiter(self.rate_per_s, self.burst)
            self._buckets[account] = bucket
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)
