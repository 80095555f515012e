"""Caregiver settings in SQLite: validation, all-or-nothing updates, audit log, migrations, CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from server.auth import UserStore
from server.cli import main
from server.db import MIGRATIONS, connect
from server.settings import InvalidSettings, SettingsStore, UserSettings, changed_keys


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


@pytest.mark.parametrize(
    "values",
    [
        {"voice": "en-gb\n"},  # `$` let a trailing newline through
        {"voice": "../../../../../dev/zero"},
        {"voice": "gmw/en-GB-x-rp"},  # no '/' without the speech package's check
        {"voice": "en.gb"},
        {"voice": ""},
        {"verbosity": "standard\n"},
        {"language": "en\n"},
        {"hazard_categories": ["all", "steps"]},
        {"hazard_categories": [["steps"]]},
        {"speech_rate": float("nan")},
    ],
)
def test_full_matches_and_combinations_are_refused(
    stores: tuple[UserStore, SettingsStore], values: dict[str, object]
) -> None:
    _, settings = stores
    with pytest.raises(InvalidSettings):
        settings.update("alice", values, changed_by="carol")
    assert settings.get("alice") == UserSettings() and settings.history("alice") == []


def test_all_with_single_categories_says_why(stores: tuple[UserStore, SettingsStore]) -> None:
    with pytest.raises(InvalidSettings, match="'all' alone"):
        stores[1].update("alice", {"hazard_categories": ["steps", "all"]}, changed_by="carol")


def test_conservative_voice_ids_without_a_check(stores: tuple[UserStore, SettingsStore]) -> None:
    _, settings = stores
    for voice in ("en-gb", "en-us", "cmn", "en+f3", None):
        assert settings.update("alice", {"voice": voice}, changed_by="carol").voice == voice


def test_injected_voice_check_decides_per_language(tmp_path: Path) -> None:
    conn = connect(tmp_path / "v.db")
    UserStore(conn).add("alice")
    offered = {("en", "en-gb"), ("en", "gmw/en-GB-x-rp"), ("zh", "cmn"), ("en", "..")}
    calls: list[tuple[str, str]] = []

    def voice_ok(voice: str, language: str) -> bool:
        calls.append((voice, language))
        return (language, voice) in offered

    settings = SettingsStore(conn, voice_ok=voice_ok)
    assert settings.update("alice", {"voice": "gmw/en-GB-x-rp"}, changed_by="c").voice
    with pytest.raises(InvalidSettings, match="not offered for language en"):
        settings.update("alice", {"voice": "cmn"}, changed_by="c")
    with pytest.raises(InvalidSettings):
        settings.update("alice", {"voice": ".."}, changed_by="c")  # never even asked
    assert ("..", "en") not in calls
    # voice and language together: the voice is checked against the new language
    new = settings.update("alice", {"language": "zh", "voice": "cmn"}, changed_by="c")
    assert (new.language, new.voice) == ("zh", "cmn")
    # a language change alone drops a voice the new language does not offer (audited)
    applied = settings.apply("alice", {"language": "en"}, changed_by="c")
    assert applied.new.voice is None and applied.changed_keys == ["voice", "language"]
    assert [(c.key, c.old, c.new) for c in applied.changes] == [
        ("voice", "cmn", None),
        ("language", "zh", "en"),
    ]

    def broken(voice: str, language: str) -> bool:
        raise RuntimeError("espeak-ng is not installed")

    with pytest.raises(InvalidSettings):  # a failing check refuses, never lets through
        SettingsStore(conn, voice_ok=broken).update("alice", {"voice": "en-gb"}, changed_by="c")


def test_stored_values_no_longer_valid_are_ignored_with_one_warning(
    stores: tuple[UserStore, SettingsStore], caplog: pytest.LogCaptureFixture
) -> None:
    users, settings = stores
    conn = users.connection
    for key, value in [
        ("voice", "../../../../../dev/zero"),  # written by an older version
        ("hazard_categories", ["all", "steps"]),
        ("speech_rate", 150),  # still fine
        ("colour", "blue"),
    ]:
        conn.execute(
            "INSERT INTO settings (user, key, value) VALUES ('alice', ?, ?)",
            (key, json.dumps(value)),
        )
    conn.execute("INSERT INTO settings (user, key, value) VALUES ('alice', 'quiet', '{nope')")
    with caplog.at_level("WARNING", logger="seealoud.settings"):
        for _ in range(5):
            got = settings.get("alice")
    assert got == UserSettings(speech_rate=150)
    warned = sorted(r.getMessage().split()[2] for r in caplog.records)
    assert warned == ["colour", "hazard_categories", "quiet", "voice"]  # once each, not 5x
    # Writing a valid value replaces the bad one; the audit shows the effective old value.
    applied = settings.apply("alice", {"voice": "en-gb"}, changed_by="carol")
    assert [(c.key, c.old, c.new) for c in applied.changes] == [("voice", None, "en-gb")]
    settings.update("alice", {"hazard_categories": ["all"]}, changed_by="carol")
    assert (
        conn.execute(
            "SELECT COUNT(*) FROM settings WHERE user = 'alice' AND key = 'hazard_categories'"
        ).fetchone()[0]
        == 0
    )  # the bad row is gone, the default is not stored


def test_audit_log_is_capped_per_user_and_ids_keep_growing(tmp_path: Path) -> None:
    conn = connect(tmp_path / "cap.db")
    users = UserStore(conn)
    users.add("alice")
    users.add("bob")
    settings = SettingsStore(conn, audit_keep=5)
    settings.update("bob", {"quiet": True}, changed_by="c")
    start = settings.last_change_id()
    for rate in range(100, 112):
        settings.update("alice", {"speech_rate": rate}, changed_by="c")
    history = settings.history("alice", limit=100)
    assert [c.new for c in history] == [111, 110, 109, 108, 107]
    assert [c.key for c in settings.history("bob")] == ["quiet"]  # per user
    assert settings.last_change_id() == start + 12
    newest, changed = settings.poll(start)
    assert newest == start + 12 and changed == {"alice": start + 12}
    assert settings.poll(newest) == (newest, {})
    assert settings.users_changed_since(0) == ["alice", "bob"]


def test_apply_reports_what_changed(stores: tuple[UserStore, SettingsStore]) -> None:
    _, settings = stores
    applied = settings.apply(
        "alice", {"speech_rate": 150, "verbosity": "standard", "quiet": True}, changed_by="c"
    )
    assert applied.old == UserSettings()
    assert applied.new == UserSettings(speech_rate=150, quiet=True)
    assert (
        applied.changed_keys
        == changed_keys(applied.old, applied.new)
        == [
            "quiet",
            "speech_rate",
        ]
    )
    assert applied.last_id == settings.last_change_id() == applied.changes[-1].id
    again = settings.apply("alice", {"quiet": True}, changed_by="c")
    assert again.changes == () and again.last_id == 0


def test_negative_zero_is_stored_as_zero(stores: tuple[UserStore, SettingsStore]) -> None:
    users, settings = stores
    users.add("zed")
    assert str(settings.update("zed", {"volume": -0.0}, changed_by="t").volume) == "0.0"
