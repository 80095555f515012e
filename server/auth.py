"""Accounts and tokens, stored in the embedded SQLite database.

A token looks like ``sa_<id>_<secret>``. The id finds the row; the secret is
stored only as its SHA-256 and compared with ``hmac.compare_digest``, so
neither a database leak nor response timing reveals a usable token. Tokens are
shown once, when created, and never logged.

Roles: ``user`` (the person walking: streams media, hears speech) and
``caregiver`` (changes the settings of the users assigned to them).

Every change to an account (added, removed, token reset, assigned, unassigned)
is also written to ``account_log``, whichever process made it, so a server can
poll :meth:`UserStore.account_changes_since` (a few microseconds of SQLite) and
close the live sessions of an account that was removed or whose token was
replaced. The store is synchronous and thread-safe; like every store on the
database it may wait for SQLite's busy timeout when another process writes, so
call it from a worker thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass

from server.db import lock_of, write_transaction

ROLES = ("user", "caregiver")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_TOKEN = re.compile(r"sa_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{20,100})")
_TOKEN_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
ACCOUNT_LOG_KEEP = 10_000
# Events in the account log. After REMOVED or TOKEN_RESET, sessions of that
# account must be closed; after ASSIGNED / UNASSIGNED a caregiver's list changed.
ADDED, REMOVED, TOKEN_RESET, ASSIGNED, UNASSIGNED = (
    "added",
    "removed",
    "token-reset",
    "assigned",
    "unassigned",
)
ENDS_SESSIONS = frozenset({REMOVED, TOKEN_RESET})


class AuthError(Exception):
    """Base of account errors; the message is safe to show an operator."""


class UnknownAccount(AuthError):
    """No account has that name."""


class AccountExists(AuthError):
    """An account with that name already exists."""


class InvalidAccount(AuthError):
    """A name or role is not acceptable."""


@dataclass(frozen=True, kw_only=True)
class Account:
    """An authenticated identity. Never carries the token.

    ``token_id`` is the public half of the token it authenticated with (not a
    secret; never log it anyway): :meth:`UserStore.is_current` compares it, so a
    session learns that its token was reset even between polls.
    """

    name: str
    role: str
    created_at: str = ""
    token_id: str = dataclasses.field(default="", repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class AccountChange:
    """One entry of the account log.

    Attributes:
        id: Increasing across all accounts; poll with the newest id seen.
        name: The account concerned (the caregiver, for (un)assignments).
        event: ``added``, ``removed``, ``token-reset``, ``assigned`` or ``unassigned``.
        other: The user, for (un)assignments; else ``None``.
        changed_at: UTC time, ISO 8601.
    """

    id: int
    name: str
    event: str
    other: str | None
    changed_at: str

    @property
    def ends_sessions(self) -> bool:
        """Whether live sessions of ``name`` must be closed (removed, or token reset)."""
        return self.event in ENDS_SESSIONS


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _new_token() -> tuple[str, str, str]:
    """(token id, secret hash, the whole token)."""
    token_id = "".join(secrets.choice(_TOKEN_ID_ALPHABET) for _ in range(12))
    secret = secrets.token_urlsafe(32)
    return token_id, _hash(secret), f"sa_{token_id}_{secret}"


def _account(row: sqlite3.Row) -> Account:
    return Account(
        name=row["name"], role=row["role"], created_at=row["created_at"], token_id=row["token_id"]
    )


class UserStore:
    """Create, list, remove and authenticate accounts.

    Thread-safe (one lock per connection, shared with the settings store).
    Blocking: see the module docstring.
    """

    def __init__(self, conn: sqlite3.Connection, *, log_keep: int = ACCOUNT_LOG_KEEP) -> None:
        self._conn = conn
        self._lock = lock_of(conn)
        self._log_keep = log_keep

    @property
    def connection(self) -> sqlite3.Connection:
        """The database connection, for stores that share the file (settings)."""
        return self._conn

    def add(self, name: str, *, role: str = "user") -> str:
        """Create an account and return its token (the only time it is visible)."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidAccount(
                f"invalid name {str(name)[:70]!r}: use 1-64 letters, digits, '_', '.', '@' or '-'"
            )
        if role not in ROLES:
            raise InvalidAccount(f"invalid role {role!r}: choose one of {', '.join(ROLES)}")
        token_id, token_hash, token = _new_token()
        try:
            with write_transaction(self._conn):
                self._conn.execute(
                    "INSERT INTO users (name, role, token_id, token_hash) VALUES (?, ?, ?, ?)",
                    (name, role, token_id, token_hash),
                )
                self._log(name, ADDED)
        except sqlite3.IntegrityError as exc:
            raise AccountExists(f"an account named {name!r} already exists") from exc
        return token

    def remove(self, name: str) -> None:
        """Delete an account with its settings and assignments; its token stops working
        at once and an ``removed`` event is logged for the servers to close its sessions."""
        with write_transaction(self._conn):
            cur = self._conn.execute("DELETE FROM users WHERE name = ?", (name,))
            if cur.rowcount == 0:
                raise UnknownAccount(f"no account named {name[:64]!r}")
            self._log(name, REMOVED)

    def reset_token(self, name: str) -> str:
        """Give an account a new token and return it (shown once). Settings and
        assignments stay; the old token stops working at once, and a
        ``token-reset`` event tells servers to close sessions opened with it."""
        token_id, token_hash, token = _new_token()
        with write_transaction(self._conn):
            cur = self._conn.execute(
                "UPDATE users SET token_id = ?, token_hash = ? WHERE name = ?",
                (token_id, token_hash, name),
            )
            if cur.rowcount == 0:
                raise UnknownAccount(f"no account named {name[:64]!r}")
            self._log(name, TOKEN_RESET)
        return token

    def accounts(self) -> list[Account]:
        """All accounts, by name."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, role, created_at, token_id FROM users ORDER BY name"
            ).fetchall()
        return [_account(r) for r in rows]

    def get(self, name: str) -> Account:
        """One account by name."""
        with self._lock:
            row = self._conn.execute(
                "SELECT name, role, created_at, token_id FROM users WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise UnknownAccount(f"no account named {str(name)[:64]!r}")
        return _account(row)

    def authenticate(self, token: str) -> Account | None:
        """The account a token belongs to, or ``None``. Never raises on bad input."""
        match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        # Hash even when the shape is wrong so that timing does not tell shapes apart.
        presented = _hash(match.group(2) if match else "x")
        with self._lock:
            row = self._conn.execute(
                "SELECT name, role, created_at, token_id, token_hash FROM users WHERE token_id = ?",
                (match.group(1) if match else "",),
            ).fetchone()
        stored = row["token_hash"] if row is not None else _hash("-")
        if hmac.compare_digest(presented, stored) and match and row is not None:
            return _account(row)
        return None

    def is_current(self, account: Account) -> bool:
        """Whether ``account`` still exists with the token it authenticated with
        (false once removed or its token reset)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM users WHERE name = ? AND token_id = ?",
                (account.name, account.token_id),
            ).fetchone()
        return row is not None

    def assign(self, caregiver: str, user: str) -> None:
        """Let ``caregiver`` manage ``user``'s settings."""
        with write_transaction(self._conn):
            if self.get(caregiver).role != "caregiver":
                raise InvalidAccount(f"{caregiver!r} is not a caregiver")
            if self.get(user).role != "user":
                raise InvalidAccount(f"{user!r} is not a user")
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO caregiver_users (caregiver, user) VALUES (?, ?)",
                (caregiver, user),
            )
            if cur.rowcount:
                self._log(caregiver, ASSIGNED, user)

    def unassign(self, caregiver: str, user: str) -> None:
        """Stop ``caregiver`` managing ``user``'s settings."""
        with write_transaction(self._conn):
            cur = self._conn.execute(
                "DELETE FROM caregiver_users WHERE caregiver = ? AND user = ?", (caregiver, user)
            )
            if cur.rowcount == 0:
                raise InvalidAccount(f"{caregiver!r} does not manage {user!r}")
            self._log(caregiver, UNASSIGNED, user)

    def assigned_users(self, caregiver: str) -> list[str]:
        """Names of the users a caregiver may manage."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT user FROM caregiver_users WHERE caregiver = ? ORDER BY user", (caregiver,)
            ).fetchall()
        return [r["user"] for r in rows]

    def assignments(self) -> dict[str, list[str]]:
        """Every caregiver (also those managing nobody) -> the users they manage, sorted."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT u.name AS caregiver, cu.user AS user FROM users u "
                "LEFT JOIN caregiver_users cu ON cu.caregiver = u.name "
                "WHERE u.role = 'caregiver' ORDER BY u.name, cu.user"
            ).fetchall()
        result: dict[str, list[str]] = {}
        for r in rows:
            users = result.setdefault(r["caregiver"], [])
            if r["user"] is not None:
                users.append(r["user"])
        return result

    def may_manage(self, account: Account, user: str) -> bool:
        """Whether ``account`` may read and change ``user``'s settings."""
        if account.role == "user":
            return account.name == user
        return user in self.assigned_users(account.name)

    def last_account_change_id(self) -> int:
        """Id of the newest account event (0 if none); ids only grow."""
        with self._lock:
            found = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'account_log'"
            ).fetchone()
        return int(found[0]) if found else 0

    def account_changes_since(self, after_id: int, *, limit: int = 1000) -> list[AccountChange]:
        """Account events newer than ``after_id``, oldest first (at most ``limit``;
        poll again from the last id returned)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, name, event, other, changed_at FROM account_log "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [
            AccountChange(
                id=r["id"],
                name=r["name"],
                event=r["event"],
                other=r["other"],
                changed_at=r["changed_at"],
            )
            for r in rows
        ]

    def _log(self, name: str, event: str, other: str | None = None) -> None:
        cur = self._conn.execute(
            "INSERT INTO account_log (name, event, other) VALUES (?, ?, ?)", (name, event, other)
        )
        if cur.lastrowid and cur.lastrowid % 100 == 0:  # prune now and then, not every write
            self._conn.execute(
                "DELETE FROM account_log WHERE id <= ?", (cur.lastrowid - self._log_keep,)
            )
