"""Faults around the settings database: many writers at once, new files, permissions.

Real processes (forked, each running the real ``seealoud settings set`` code
path with its own connection) and real threads on a real file database.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from pathlib import Path

import pytest

from server.auth import UserStore
from server.cli import main
from server.db import MIGRATIONS, connect
from server.settings import SettingsStore, UserSettings

_FORK = multiprocessing.get_context("fork")


def _paired(k: int) -> dict[str, object]:
    """Three settings that must always be seen together: an update applied in part
    breaks ``speech_rate == 100 + 5 * max_words`` or ``quiet == odd(max_words)``."""
    return {"max_words": k, "speech_rate": 100 + 5 * k, "quiet": k % 2 == 1}


def _consistent(s: UserSettings) -> bool:
    return s.speech_rate == 100 + 5 * s.max_words and s.quiet == (s.max_words % 2 == 1)


def _cli_set(db: str, k: int, go: threading.Event) -> None:
    go.wait(30)
    values = [f"{key}={str(v).lower()}" for key, v in _paired(k).items()]
    raise SystemExit(main(["settings", "--db", db, "set", "alice", *values]))


def test_fifty_cli_processes_and_the_server_write_at_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    setup = connect(db)
    UserStore(setup).add("alice")
    SettingsStore(setup).update("alice", _paired(20), changed_by="setup")
    setup.close()

    go = _FORK.Event()
    processes = [
        _FORK.Process(target=_cli_set, args=(str(db), k, go)) for k in range(3, 53)
    ]  # 50 processes, forked before this process opens its own connection or threads
    for p in processes:
        p.start()

    server = SettingsStore(connect(db))  # the server's one connection, shared by its threads
    torn: list[UserSettings] = []
    errors: list[BaseException] = []

    def server_writer(ks: list[int]) -> None:
        try:
            for k in ks:
                applied = server.apply("alice", _paired(k), changed_by="server")
                for seen in (applied.old, applied.new, server.get("alice")):
                    if not _consistent(seen):
                        torn.append(seen)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=server_writer, args=([53 + i, 57 + i, 3 + i, 30 + i] * 3,))
        for i in range(4)
    ]
    go.set()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for p in processes:
        p.join(60)
    capfd.readouterr()

    assert [p.exitcode for p in processes] == [0] * 50
    assert errors == [] and torn == []
    final = server.get("alice")
    assert _consistent(final)

    # The audit log is a chain: every entry's "old" is the previous entry's "new".
    log = list(reversed(server.history("alice", limit=10_000)))
    for key in ("max_words", "speech_rate", "quiet"):
        entries = [c for c in log if c.key == key]
        assert entries, key
        expected_old = getattr(UserSettings(), key)
        for change in entries:
            assert change.old == expected_old, (key, change)
            expected_old = change.new
        assert expected_old == getattr(final, key)


def _open(db: str, go: threading.Event) -> None:
    go.wait(30)
    connect(db).close()


def test_processes_starting_together_migrate_a_new_file_once(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    go = _FORK.Event()
    processes = [_FORK.Process(target=_open, args=(str(db), go)) for _ in range(8)]
    for p in processes:
        p.start()
    go.set()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0] * 8
    conn = connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_database_and_its_folders_are_private_whatever_the_umask(tmp_path: Path) -> None:
    parent_mode = _mode(tmp_path)
    old_umask = os.umask(0)  # the most permissive umask: the modes must not depend on it
    try:
        db = tmp_path / "new" / "deeper" / "seealoud.db"
        conn = connect(db)
        UserStore(conn).add("alice")  # a write, so the WAL files exist
    finally:
        os.umask(old_umask)
    assert _mode(tmp_path / "new") == 0o700
    assert _mode(tmp_path / "new" / "deeper") == 0o700
    for suffix in ("", "-wal", "-shm"):
        assert Path(f"{db}{suffix}").exists(), suffix
        assert _mode(f"{db}{suffix}") == 0o600, suffix
    assert _mode(tmp_path) == parent_mode  # an existing folder is left alone


def test_an_existing_readable_database_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    connect(db).close()
    os.chmod(db, 0o644)
    folder_mode = _mode(tmp_path)
    connect(db).close()
    assert _mode(db) == 0o600
    assert _mode(tmp_path) == folder_mode  # the operator's folder (may be /tmp) is theirs
