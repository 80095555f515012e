"""Caregiver settings in SQLite: validation, all-or-nothing updates, audit log, migrations, CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from server.auth import UserStore
from server.cli import main
from server.db import MIGRATIONS, connect
from server.settings import InvalidSettings, SettingsStore, UserSettings


@pytest.fixture
def stores(tmp_path: Path) -> tuple[UserStore, SettingsStore]:
    conn = connect(tmp_path / "s.db")
    users = UserStore(conn)
    users.add("alice")
    return users, SettingsStore(conn)


def test_defaults_update_and_audit(stores: tuple[UserStore, SettingsStore]) -> None:
    _, settings = stores
    assert settings.get("alice") == UserSettings()
    new = settings.update(
        "alice",
        {
            "verbosity": "detailed",
            "heartbeat_s": None,
            "hazard_categories": ["steps", "vehicles", "steps"],
        },
        changed_by="carol",
    )
    assert new.verbosity == "detailed" and new.heartbeat_s is None
    assert new.hazard_categories == ["steps", "vehicles"]
    settings.update("alice", {"verbosity": "detailed"}, changed_by="carol")  # no change, no log
    settings.update("alice", {"verbosity": "standard"}, changed_by="cli:root")  # back to default
    log = settings.history("alice")
    assert [(c.key, c.old, c.new, c.changed_by) for c in log] == [
        ("verbosity", "detailed", "standard", "cli:root"),
        ("hazard_categories", ["all"], ["steps", "vehicles"], "carol"),
        ("heartbeat_s", 10.0, None, "carol"),
        ("verbosity", "standard", "detailed", "carol"),
    ]
    assert all(c.changed_at.endswith("Z") for c in log)


@pytest.mark.parametrize(
    "values",
    [
        {"verbosity": "chatty"},
        {"speech_rate": 1000},
        {"speech_rate": 170.5},
        {"volume": "loud"},
        {"quiet": "yes"},
        {"language": "klingon"},
        {"heartbeat_s": 1},
        {"hazard_categories": []},
        {"hazard_categories": ["ghosts"]},
        {"max_words": 0},
        {"voice": "x; rm -rf /"},
        {"colour": "blue"},
    ],
)
def test_invalid_values_change_nothing(
    stores: tuple[UserStore, SettingsStore], values: dict[str, object]
) -> None:
    _, settings = stores
    with pytest.raises(InvalidSettings):
        settings.update("alice", {"speech_rate": 150, **values}, changed_by="carol")
    assert settings.get("alice") == UserSettings() and settings.history("alice") == []


def test_unknown_user(stores: tuple[UserStore, SettingsStore]) -> None:
    with pytest.raises(InvalidSettings, match="no user"):
        stores[1].update("zed", {"quiet": True}, changed_by="carol")


def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    raw = sqlite3.connect(db)
    raw.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    raw.execute(
        "INSERT INTO users (name, role, token_id, token_hash) VALUES ('alice', 'user', 'abc', 'x')"
    )
    raw.commit()
    raw.close()
    conn = connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert SettingsStore(conn).update("alice", {"quiet": True}, changed_by="t").quiet


def test_cli_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.db")
    assert main(["users", "--db", db, "add", "alice"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "settings",
                "--db",
                db,
                "set",
                "alice",
                "verbosity=hazards-only",
                "speech_rate=150",
                "heartbeat_s=null",
            ]
        )
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert shown["verbosity"] == "hazards-only" and shown["heartbeat_s"] is None
    assert main(["settings", "--db", db, "get", "alice"]) == 0
    assert json.loads(capsys.readouterr().out)["speech_rate"] == 150
    assert main(["settings", "--db", db, "log", "alice"]) == 0
    assert "cli:" in capsys.readouterr().out
    assert main(["settings", "--db", db, "set", "alice", "volume=7"]) == 2
    assert "volume" in capsys.readouterr().err
    assert main(["settings", "--db", db, "get", "nobody"]) == 2
