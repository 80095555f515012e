"""The embedded SQLite database and its schema migrations.

Migrations are an ordered list of SQL scripts; ``PRAGMA user_version`` records
how many have run, so an old database is upgraded in place at start-up.
Append new migrations at the end; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
]


def connect(path: Path | str) -> sqlite3.Connection:
    """Open (creating if needed) the database and bring its schema up to date."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Run the migrations this database has not seen; return the new version."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema v{version} is newer than this SeeAloud (v{len(MIGRATIONS)}); "
            "upgrade SeeAloud"
        )
    for number in range(version, len(MIGRATIONS)):
        try:
            conn.executescript(
                f"BEGIN; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
