"""Accounts and tokens, stored in the embedded SQLite database.

A token looks like ``sa_<id>_<secret>``. The id finds the row; the secret is
stored only as its SHA-256 and compared with ``hmac.compare_digest``, so
neither a database leak nor response timing reveals a usable token. Tokens are
shown once, when created, and never logged.

Roles: ``user`` (the person walking: streams media, hears speech) and
``caregiver`` (changes the settings of the users assigned to them).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass

ROLES = ("user", "caregiver")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_TOKEN = re.compile(r"^sa_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{20,100})$")


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
    """An authenticated identity. Never carries the token."""

    name: str
    role: str
    created_at: str = ""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class UserStore:
    """Create, list, remove and authenticate accounts.

    Thread-safe: the CLI and the server's event loop both use it; SQLite calls
    here are a few microseconds and run under one lock.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @property
    def connection(self) -> sqlite3.Connection:
        """The database connection, for stores that share the file (settings)."""
        return self._conn

    def add(self, name: str, *, role: str = "user") -> str:
        """Create an account and return its token (the only time it is visible)."""
        if not _NAME.match(name):
            raise InvalidAccount(
                f"invalid name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'"
            )
        if role not in ROLES:
            raise InvalidAccount(f"invalid role {role!r}: choose one of {', '.join(ROLES)}")
        token_id = "".join(secrets.choice("abcdefghijkmnpqrstuvwxyz23456789") for _ in range(12))
        secret = secrets.token_urlsafe(32)
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO users (name, role, token_id, token_hash) VALUES (?, ?, ?, ?)",
                    (name, role, token_id, _hash(secret)),
                )
            except sqlite3.IntegrityError as exc:
                raise AccountExists(f"an account named {name!r} already exists") from exc
        return f"sa_{token_id}_{secret}"

    def remove(self, name: str) -> None:
        """Delete an account; its token stops working at once."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM users WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise UnknownAccount(f"no account named {name!r}")

    def accounts(self) -> list[Account]:
        """All accounts, by name."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, role, created_at FROM users ORDER BY name"
            ).fetchall()
        return [Account(name=r["name"], role=r["role"], created_at=r["created_at"]) for r in rows]

    def get(self, name: str) -> Account:
        """One account by name."""
        with self._lock:
            row = self._conn.execute(
                "SELECT name, role, created_at FROM users WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise UnknownAccount(f"no account named {name!r}")
        return Account(name=row["name"], role=row["role"], created_at=row["created_at"])

    def authenticate(self, token: str) -> Account | None:
        """The account a token belongs to, or ``None``. Never raises on bad input."""
        match = _TOKEN.match(token) if isinstance(token, str) else None
        # Hash even when the shape is wrong so that timing does not tell shapes apart.
        presented = _hash(match.group(2) if match else "x")
        with self._lock:
            row = self._conn.execute(
                "SELECT name, role, created_at, token_hash FROM users WHERE token_id = ?",
                (match.group(1) if match else "",),
            ).fetchone()
        stored = row["token_hash"] if row is not None else _hash("-")
        if hmac.compare_digest(presented, stored) and match and row is not None:
            return Account(name=row["name"], role=row["role"], created_at=row["created_at"])
        return None

    def assign(self, caregiver: str, user: str) -> None:
        """Let ``caregiver`` manage ``user``'s settings."""
        if self.get(caregiver).role != "caregiver":
            raise InvalidAccount(f"{caregiver!r} is not a caregiver")
        if self.get(user).role != "user":
            raise InvalidAccount(f"{user!r} is not a user")
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO caregiver_users (caregiver, user) VALUES (?, ?)",
                (caregiver, user),
            )

    def assigned_users(self, caregiver: str) -> list[str]:
        """Names of the users a caregiver may manage."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT user FROM caregiver_users WHERE caregiver = ? ORDER BY user", (caregiver,)
            ).fetchall()
        return [r["user"] for r in rows]

    def may_manage(self, account: Account, user: str) -> bool:
        """Whether ``account`` may read and change ``user``'s settings."""
        if account.role == "user":
            return account.name == user
        return user in self.assigned_users(account.name)
