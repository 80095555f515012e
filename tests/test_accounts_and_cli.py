"""Accounts in SQLite, schema migrations, config loading and the CLI commands."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.auth import AccountExists, InvalidAccount, UnknownAccount, UserStore
from server.cli import main
from server.config import ConfigError, ServerConfig
from server.db import MIGRATIONS, connect
from server.settings import SettingsStore


def test_tokens_are_stored_hashed_and_authenticate(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = UserStore(connect(db))
    token = store.add("alice")
    assert token.startswith("sa_")
    account = store.authenticate(token)
    assert account is not None and account.name == "alice" and account.role == "user"
    secret = token.rsplit("_", 1)[1]
    raw = db.read_bytes() + (tmp_path / "a.db-wal").read_bytes()
    assert secret.encode() not in raw
    for bad in ["", token[:-1], token + "x", token.replace("sa_", "sb_"), "sa_x_y", None]:
        assert store.authenticate(bad) is None  # type: ignore[arg-type]


def test_account_management(tmp_path: Path) -> None:
    store = UserStore(connect(tmp_path / "a.db"))
    store.add("alice")
    store.add("carol", role="caregiver")
    with pytest.raises(AccountExists):
        store.add("alice")
    with pytest.raises(InvalidAccount):
        store.add("bad name; drop table")
    with pytest.raises(InvalidAccount):
        store.add("dave", role="admin")
    store.assign("carol", "alice")
    assert store.assigned_users("carol") == ["alice"]
    assert store.may_manage(store.get("carol"), "alice")
    assert not store.may_manage(store.get("alice"), "carol")
    with pytest.raises(InvalidAccount):
        store.assign("alice", "carol")
    store.remove("alice")
    assert [a.name for a in store.accounts()] == ["carol"]
    assert store.assigned_users("carol") == []
    with pytest.raises(UnknownAccount):
        store.remove("alice")


def test_migrations_upgrade_and_refuse_newer(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    conn = connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()
    connect(db).close()  # idempotent on an up-to-date database
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(RuntimeError, match="newer"):
        connect(db)


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 9000\nmax_frame_bytes = 2000\ndb_path = "~/x.db"\n')
    cfg = ServerConfig.load(path, port=9100)
    assert cfg.port == 9100 and cfg.max_frame_bytes == 2000 and "~" not in str(cfg.db_path)
    path.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        ServerConfig.load(path)
    with pytest.raises(ConfigError):
        ServerConfig(tls_cert=Path("c.pem"))


def test_cli_users(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.db")
    assert main(["users", "--db", db, "add", "alice"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert UserStore(connect(db)).authenticate(token) is not None
    assert main(["users", "--db", db, "add", "carol", "--role", "caregiver"]) == 0
    assert main(["users", "--db", db, "assign", "carol", "alice"]) == 0
    capsys.readouterr()
    assert main(["users", "--db", db, "list"]) == 0
    listing = capsys.readouterr().out
    assert "alice\tuser" in listing and "carol\tcaregiver" in listing and token not in listing
    assert main(["users", "--db", db, "add", "alice"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["users", "--db", db, "remove", "alice"]) == 0
    assert UserStore(connect(db)).authenticate(token) is None


def test_reset_token_keeps_settings_and_assignments(tmp_path: Path) -> None:
    conn = connect(tmp_path / "r.db")
    store, settings = UserStore(conn), SettingsStore(conn)
    old = store.add("alice")
    carol_token = store.add("carol", role="caregiver")
    store.assign("carol", "alice")
    settings.update("alice", {"speech_rate": 150}, changed_by="carol")
    session_account = store.authenticate(old)
    assert session_account is not None and store.is_current(session_account)
    new = store.reset_token("alice")
    assert new != old
    assert store.authenticate(old) is None  # at once
    fresh = store.authenticate(new)
    assert fresh is not None and fresh.name == "alice"
    assert not store.is_current(session_account) and store.is_current(fresh)
    assert settings.get("alice").speech_rate == 150
    assert store.assignments() == {"carol": ["alice"]}
    carol_new = store.reset_token("carol")
    assert store.authenticate(carol_token) is None and store.authenticate(carol_new) is not None
    assert store.assigned_users("carol") == ["alice"]
    with pytest.raises(UnknownAccount):
        store.reset_token("nobody")


def test_account_log_tells_a_server_which_sessions_to_close(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    server = UserStore(connect(db))  # the server's connection
    cli = UserStore(connect(db))  # another process's, as `seealoud users ...` would be
    seen = server.last_account_change_id()
    cli.add("alice")
    cli.add("bob")
    cli.add("carol", role="caregiver")
    cli.assign("carol", "alice")
    cli.assign("carol", "alice")  # already assigned: no event
    cli.unassign("carol", "alice")
    cli.reset_token("bob")
    cli.remove("alice")
    changes = server.account_changes_since(seen)
    assert [(c.name, c.event, c.other) for c in changes] == [
        ("alice", "added", None),
        ("bob", "added", None),
        ("carol", "added", None),
        ("carol", "assigned", "alice"),
        ("carol", "unassigned", "alice"),
        ("bob", "token-reset", None),
        ("alice", "removed", None),
    ]
    assert [c.name for c in changes if c.ends_sessions] == ["bob", "alice"]
    assert server.last_account_change_id() == changes[-1].id
    assert server.account_changes_since(changes[-1].id) == []
    with pytest.raises(InvalidAccount):
        cli.unassign("carol", "alice")


def test_assignments_and_empty_caregivers(tmp_path: Path) -> None:
    store = UserStore(connect(tmp_path / "a.db"))
    for name in ("alice", "bob"):
        store.add(name)
    for name in ("carol", "dora"):
        store.add(name, role="caregiver")
    store.assign("carol", "bob")
    store.assign("carol", "alice")
    assert store.assignments() == {"carol": ["alice", "bob"], "dora": []}


def test_cli_list_shows_roles_and_assignments_and_reset_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "cli.db")
    assert main(["users", "--db", db, "add", "alice"]) == 0
    old = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["users", "--db", db, "add", "bob"]) == 0
    assert main(["users", "--db", db, "add", "carol", "--role", "caregiver"]) == 0
    assert main(["users", "--db", db, "assign", "carol", "alice"]) == 0
    capsys.readouterr()
    assert main(["users", "--db", db, "list"]) == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert rows["alice"][1] == "user" and rows["alice"][3] == "managed by: carol"
    assert rows["bob"][3] == "managed by: (nobody)"
    assert rows["carol"][1] == "caregiver" and rows["carol"][3] == "manages: alice"
    assert main(["users", "--db", db, "reset-token", "alice"]) == 0
    out = capsys.readouterr().out
    new = out.strip().splitlines()[-1]
    assert out.count("sa_") == 1 and new.startswith("sa_") and new != old
    store = UserStore(connect(db))
    assert store.authenticate(old) is None and store.authenticate(new) is not None
    assert main(["users", "--db", db, "unassign", "carol", "alice"]) == 0
    assert main(["users", "--db", db, "reset-token", "nobody"]) == 2
    assert "no account" in capsys.readouterr().err
