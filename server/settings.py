"""Per-user settings a caregiver controls, stored in SQLite with an audit log.

Only values that differ from the defaults are stored, so a new default reaches
every user who never changed that setting. Every change records who made it,
when, and the old and new value. An update is validated as a whole first:
one bad value rejects the update and changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any

VERBOSITY = ("hazards-only", "standard", "detailed")
LANGUAGES = ("en", "zh", "fr", "de", "es")
HAZARD_CATEGORIES = ("all", "obstacles", "steps", "vehicles", "people", "doors", "surface")
_VOICE = re.compile(r"^[A-Za-z0-9_/+.-]{1,40}$")


class InvalidSettings(ValueError):
    """A setting's name or value is not acceptable; the message says which and why."""


@dataclass(kw_only=True)
class UserSettings:
    """How the companion talks to one user.

    Attributes:
        verbosity: ``hazards-only`` (warnings and answers), ``standard`` (also
            signs and text) or ``detailed`` (also short scene descriptions).
        quiet: Warnings and answers only, and no heartbeat look.
        speech_rate: Words per minute (80-450).
        voice: espeak-ng voice id; ``None`` picks one for ``language``.
        volume: 0.0-1.0.
        language: One setting for prompts, speech recognition and voice.
        heartbeat_s: Look again after this many seconds even if nothing
            changed; ``None`` turns it off.
        hazard_categories: Which hazards to announce (``all`` or some of
            obstacles, steps, vehicles, people, doors, surface).
        max_words: Longest utterance, in words.
        repeat_after_s: The same sign or description may be said again after
            this long even if unchanged.
        urgent_repeat_s: An urgent hazard still in the path is repeated this often.
        memory: Give the model the last few observations, for questions like
            "what did I just pass?".
    """

    verbosity: str = "standard"
    quiet: bool = False
    speech_rate: int = 175
    voice: str | None = None
    volume: float = 1.0
    language: str = "en"
    heartbeat_s: float | None = 10.0
    hazard_categories: list[str] = field(default_factory=lambda: ["all"])
    max_words: int = 20
    repeat_after_s: float = 30.0
    urgent_repeat_s: float = 3.0
    memory: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def validate(key: str, value: Any) -> Any:
    """The value to store for ``key``, or ``InvalidSettings``."""

    def number(lo: float, hi: float, *, integer: bool = False) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidSettings(f"{key} must be a number")
        if integer and int(value) != value:
            raise InvalidSettings(f"{key} must be a whole number")
        if not lo <= value <= hi:
            raise InvalidSettings(f"{key} must be between {lo:g} and {hi:g}, not {value}")
        return int(value) if integer else float(value)

    if key == "verbosity":
        if value not in VERBOSITY:
            raise InvalidSettings(f"verbosity must be one of {', '.join(VERBOSITY)}")
        return value
    if key in ("quiet", "memory"):
        if not isinstance(value, bool):
            raise InvalidSettings(f"{key} must be true or false")
        return value
    if key == "speech_rate":
        return number(80, 450, integer=True)
    if key == "voice":
        if value is not None and not (isinstance(value, str) and _VOICE.match(value)):
            raise InvalidSettings("voice must be an espeak-ng voice id such as gmw/en-GB-x-rp")
        return value
    if key == "volume":
        return number(0.0, 1.0)
    if key == "language":
        if value not in LANGUAGES:
            raise InvalidSettings(f"language must be one of {', '.join(LANGUAGES)}")
        return value
    if key == "heartbeat_s":
        return None if value is None else number(3, 300)
    if key == "hazard_categories":
        if (
            not isinstance(value, list)
            or not value
            or any(v not in HAZARD_CATEGORIES for v in value)
        ):
            raise InvalidSettings(
                f"hazard_categories must be a non-empty list of {', '.join(HAZARD_CATEGORIES)}"
            )
        return sorted(set(value))
    if key == "max_words":
        return number(3, 60, integer=True)
    if key == "repeat_after_s":
        return number(5, 3600)
    if key == "urgent_repeat_s":
        return number(1, 60)
    raise InvalidSettings(f"unknown setting {key!r}")


@dataclass(kw_only=True)
class SettingsChange:
    """One audited change."""

    user: str
    changed_by: str
    changed_at: str
    key: str
    old: Any
    new: Any


class SettingsStore:
    """Read, validate, change and audit settings. Thread-safe."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def get(self, user: str) -> UserSettings:
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, value FROM settings WHERE user = ?", (user,)
            ).fetchall()
        stored = {r["key"]: json.loads(r["value"]) for r in rows}
        known = {f.name for f in dataclasses.fields(UserSettings)}
        return UserSettings(**{k: v for k, v in stored.items() if k in known})

    def update(self, user: str, values: dict[str, Any], *, changed_by: str) -> UserSettings:
        """Apply ``values`` (all or nothing) and log each actual change."""
        if not values:
            raise InvalidSettings("no settings given")
        clean = {key: validate(key, value) for key, value in values.items()}
        with self._lock:
            exists = self._conn.execute("SELECT 1 FROM users WHERE name = ?", (user,)).fetchone()
            if exists is None:
                raise InvalidSettings(f"no user named {user!r}")
            current = self._current(user)
            defaults = UserSettings().to_dict()
            self._conn.execute("BEGIN")
            try:
                for key, new in clean.items():
                    old = current.get(key, defaults[key])
                    if old == new:
                        continue
                    if new == defaults[key]:
                        self._conn.execute(
                            "DELETE FROM settings WHERE user = ? AND key = ?", (user, key)
                        )
                    else:
                        self._conn.execute(
                            "INSERT INTO settings (user, key, value) VALUES (?, ?, ?) "
                            "ON CONFLICT (user, key) DO UPDATE SET value = excluded.value",
                            (user, key, json.dumps(new)),
                        )
                    self._conn.execute(
                        "INSERT INTO settings_log (user, changed_by, key, old_value, new_value) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (user, changed_by, key, json.dumps(old), json.dumps(new)),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return self.get(user)

    def history(self, user: str, *, limit: int = 50) -> list[SettingsChange]:
        """The most recent changes, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT user, changed_by, changed_at, key, old_value, new_value FROM settings_log "
                "WHERE user = ? ORDER BY id DESC LIMIT ?",
                (user, limit),
            ).fetchall()
        return [
            SettingsChange(
                user=r["user"],
                changed_by=r["changed_by"],
                changed_at=r["changed_at"],
                key=r["key"],
                old=json.loads(r["old_value"]),
                new=json.loads(r["new_value"]),
            )
            for r in rows
        ]

    def last_change_id(self) -> int:
        """Id of the newest audit entry (0 if none): cheap to poll for outside changes."""
        with self._lock:
            row = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM settings_log").fetchone()
        return int(row[0])

    def users_changed_since(self, change_id: int) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT user FROM settings_log WHERE id > ?", (change_id,)
            ).fetchall()
        return [r["user"] for r in rows]

    def _current(self, user: str) -> dict[str, Any]:
        rows = self._conn.execute(
            "SELECT key, value FROM settings WHERE user = ?", (user,)
        ).fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}
