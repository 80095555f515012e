"""The embedded SQLite database: opening it safely, transactions, schema migrations.

Migrations are an ordered list of SQL scripts; ``PRAGMA user_version`` records
how many have run, so an old database is upgraded in place at start-up.
Append new migrations at the end; never edit one that has shipped.

Several processes share the file (``seealoud serve`` and any number of
``seealoud users`` / ``seealoud settings`` commands), so:

- the database runs in WAL mode (readers never wait for a writer), with a busy
  timeout of ``BUSY_TIMEOUT_MS``: a write, or a read behind a write of this same
  process, **may block that long** when another process holds the write lock.
  Call the stores from a worker thread, never on the event loop;
- every read-modify-write runs in :func:`write_transaction` (``BEGIN
  IMMEDIATE``: the write lock is taken before anything is read, so what was read
  is still true when it is written);
- one connection serves all threads of a process, serialised by the lock that
  :func:`connect` attaches to it (``conn.lock``), shared by every store using
  that connection;
- the file holds token hashes and who cares for whom: it and its WAL files are
  created ``0600`` and a folder created for it ``0700``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

BUSY_TIMEOUT_MS = 5000

MIGRATIONS: list[str] = [
    # 1: accounts. Tokens are stored only as SHA-256 of their secret part.
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('user', 'caregiver')),
        token_id TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
    );
    CREATE TABLE caregiver_users (
        caregiver TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        PRIMARY KEY (caregiver, user)
    );
    """,
    # 2: caregiver settings per user, and an audit log of every change.
    """
    CREATE TABLE settings (
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (user, key)
    );
    CREATE TABLE settings_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        changed_by TEXT NOT NULL,
        changed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        key TEXT NOT NULL,
        old_value TEXT,
        new_value TEXT NOT NULL
    );
    CREATE INDEX settings_log_user ON settings_log(user, id);
    """,
    # 3: account events (added, removed, token reset, (un)assigned), so a server
    # learns within a poll that a session's account is gone or its token replaced.
    """
    CREATE TABLE account_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        event TEXT NOT NULL,
        other TEXT,
        changed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    """,
]


class Connection(sqlite3.Connection):
    """A connection carrying the lock that serialises its use across threads."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lock = threading.RLock()


_fallback_locks: dict[int, tuple[sqlite3.Connection, threading.RLock]] = {}
_fallback_guard = threading.Lock()


def lock_of(conn: sqlite3.Connection) -> threading.RLock:
    """The lock shared by every store that uses ``conn`` (see :func:`connect`).

    A plain ``sqlite3.Connection`` (not from :func:`connect`) gets one lock per
    connection object too, kept for the life of the process.
    """
    if isinstance(conn, Connection):
        return conn.lock
    with _fallback_guard:
        entry = _fallback_locks.get(id(conn))
        if entry is None or entry[0] is not conn:
            entry = (conn, threading.RLock())
            _fallback_locks[id(conn)] = entry
        return entry[1]


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception), under the
    connection's lock. May wait up to ``BUSY_TIMEOUT_MS`` for another process's
    write; raises ``sqlite3.OperationalError`` ("database is locked") after that."""
    with lock_of(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents as ``0700``. Folders that already
    exist are left as they are (the operator chose them; it may be ``/tmp``)."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process was quicker
            path.mkdir(mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def _make_private_file(path: Path) -> None:
    """Create the database file as ``0600`` before SQLite opens it (SQLite gives its
    ``-wal`` and ``-shm`` files the same mode), and tighten an existing one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


def connect(path: Path | str) -> Connection:
    """Open (creating if needed, privately) the database and bring its schema up to date."""
    memory = str(path) == ":memory:"
    if not memory:
        path = Path(path)
        _make_private_dirs(path.parent)
        _make_private_file(path)
    conn = sqlite3.connect(
        str(path), check_same_thread=False, isolation_level=None, factory=Connection
    )
    assert isinstance(conn, Connection)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not memory:
        _wal(conn)
    migrate(conn)
    return conn


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. That needs the file to itself, and SQLite does not wait for it (the
    busy timeout does not apply): processes starting together on a new file got
    "database is locked" now and then. Retried for as long as the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # another process holds the file for a moment: try again


def _statements(script: str) -> list[str]:
    """Split a migration script into complete SQL statements."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {pending.strip()[:60]!r}")
    return statements


def migrate(conn: sqlite3.Connection) -> int:
    """Run the migrations this database has not seen; return the new version.

    The version is read inside the write transaction, so processes starting
    together on a new file migrate it once, not once each.
    """
    with write_transaction(conn):
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database schema v{version} is newer than this SeeAloud "
                f"(v{len(MIGRATIONS)}); upgrade SeeAloud"
            )
        for number in range(version, len(MIGRATIONS)):
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
    return len(MIGRATIONS)
