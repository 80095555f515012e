"""Per-user settings a caregiver controls, stored in SQLite with an audit log.

Only values that differ from the defaults are stored, so a new default reaches
every user who never changed that setting. Every change records who made it,
when, and the old and new value.

An update is one ``BEGIN IMMEDIATE`` transaction around read, validate, write
and audit: the "old" value in the log is the value the update replaced, even
with the server and fifty ``seealoud settings set`` processes writing at once,
and one bad value rejects the whole update and changes nothing.

The audit log keeps the newest ``audit_keep`` (default 1000) entries per user;
older ones are deleted by the update that goes past the cap.

A stored value that is no longer valid (a voice espeak-ng no longer lists, a
language no longer offered, a combination now refused) is ignored by
:meth:`SettingsStore.get`: the default is used, and one warning is logged per
user, setting and stored value (not one per call).

The store is synchronous and thread-safe; every call may wait for SQLite's busy
timeout (5 s) when another process is writing, so call it from a worker thread.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.db import lock_of, write_transaction

log = logging.getLogger("seealoud.settings")

VERBOSITY = ("hazards-only", "standard", "detailed")
LANGUAGES = ("en", "zh", "fr", "de", "es")
HAZARD_CATEGORIES = ("all", "obstacles", "steps", "vehicles", "people", "doors", "surface")
AUDIT_KEEP = 1000

VoiceCheck = Callable[[str, str], bool]
"""``(voice, language) -> bool``: whether the text-to-speech engine offers ``voice``
for ``language``. Injected by the server (the speech package's check)."""

# Without a voice check: espeak-ng-style ids only ("en-gb", "en-us", "cmn",
# "en+f3"): never a '/', never a '.', so the value cannot be taken as a path.
_VOICE_SHAPE = re.compile(r"[A-Za-z0-9]{1,12}(?:[-_+][A-Za-z0-9]{1,12}){0,4}")
# With a voice check the check decides; this only keeps junk out of it.
_VOICE_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+/-]{0,63}")
_WARNED_CAP = 10_000


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
        hazard_categories: Which hazards to announce: ``["all"]``, or some of
            obstacles, steps, vehicles, people, doors, surface (not both).
        max_words: Longest utterance, in words.
        repeat_after_s: The same obstacle or description may be said again
            after this long even if unchanged (signs: only when their text
            changes, or after 10 minutes; see ``server/narrator.py``).
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


KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(UserSettings))


def changed_keys(old: UserSettings, new: UserSettings) -> list[str]:
    """The settings whose values differ, in ``UserSettings`` field order."""
    return [key for key in KEYS if getattr(old, key) != getattr(new, key)]


def validate(
    key: str, value: Any, *, voice_ok: VoiceCheck | None = None, language: str = "en"
) -> Any:
    """The value to store for ``key``, or ``InvalidSettings``.

    ``voice_ok`` and ``language`` matter only for ``voice``: with a check, the
    voice must be one it accepts for ``language``; without one, only a
    conservative id shape (letters, digits, '-', '_', '+'; no '/' or '.').
    """

    def number(lo: float, hi: float, *, integer: bool = False) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidSettings(f"{key} must be a number")
        if not lo <= value <= hi:  # also refuses NaN
            raise InvalidSettings(f"{key} must be between {lo:g} and {hi:g}, not {value}")
        if integer and int(value) != value:
            raise InvalidSettings(f"{key} must be a whole number")
        return int(value) if integer else float(value) + 0.0  # + 0.0: -0.0 is stored as 0.0

    def one_of(choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            raise InvalidSettings(f"{key} must be one of {', '.join(choices)}")
        return value

    if key == "verbosity":
        return one_of(VERBOSITY)
    if key in ("quiet", "memory"):
        if not isinstance(value, bool):
            raise InvalidSettings(f"{key} must be true or false")
        return value
    if key == "speech_rate":
        return number(80, 450, integer=True)
    if key == "voice":
        return None if value is None else _voice(value, voice_ok, language)
    if key == "volume":
        return number(0.0, 1.0)
    if key == "language":
        return one_of(LANGUAGES)
    if key == "heartbeat_s":
        return None if value is None else number(3, 300)
    if key == "hazard_categories":
        if (
            not isinstance(value, list)
            or not value
            or any(not isinstance(v, str) or v not in HAZARD_CATEGORIES for v in value)
        ):
            raise InvalidSettings(
                f"hazard_categories must be a non-empty list of {', '.join(HAZARD_CATEGORIES)}"
            )
        chosen = sorted(set(value))
        if "all" in chosen and len(chosen) > 1:
            raise InvalidSettings(
                "hazard_categories: 'all' already includes every category; "
                "choose 'all' alone or only the single categories wanted"
            )
        return chosen
    if key == "max_words":
        return number(3, 60, integer=True)
    if key == "repeat_after_s":
        return number(5, 3600)
    if key == "urgent_repeat_s":
        return number(1, 60)
    raise InvalidSettings(f"unknown setting {str(key)[:40]!r}")


def _voice(value: Any, voice_ok: VoiceCheck | None, language: str) -> str:
    if voice_ok is None:
        if isinstance(value, str) and _VOICE_SHAPE.fullmatch(value):
            return value
        raise InvalidSettings("voice must be a voice id such as en-gb, en-us or cmn")
    if isinstance(value, str) and _VOICE_TEXT.fullmatch(value) and ".." not in value:
        try:
            if voice_ok(value, language):
                return value
        except Exception:  # a failing check refuses; it never lets a value through
            log.exception("the voice check failed")
    raise InvalidSettings(f"voice {str(value)[:40]!r} is not offered for language {language}")


@dataclass(frozen=True, kw_only=True)
class SettingsChange:
    """One audited change. ``id`` orders changes across users (0 if unknown)."""

    user: str
    changed_by: str
    changed_at: str
    key: str
    old: Any
    new: Any
    id: int = 0


@dataclass(frozen=True, kw_only=True)
class AppliedUpdate:
    """What one update did, read and written in one transaction.

    Attributes:
        user: Whose settings.
        old: The effective settings just before the update.
        new: The effective settings after it.
        changes: The audit entries written, in field order (empty if nothing
            changed); ``changes[-1].id`` is the newest audit id.
    """

    user: str
    old: UserSettings
    new: UserSettings
    changes: tuple[SettingsChange, ...]

    @property
    def changed_keys(self) -> list[str]:
        return [c.key for c in self.changes]

    @property
    def last_id(self) -> int:
        """The newest audit id this update wrote, 0 if it changed nothing."""
        return self.changes[-1].id if self.changes else 0


def _now() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class SettingsStore:
    """Read, validate, change and audit settings. Thread-safe; blocking (see module)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        voice_ok: VoiceCheck | None = None,
        audit_keep: int = AUDIT_KEEP,
    ) -> None:
        if audit_keep < 1:
            raise ValueError("audit_keep must be at least 1")
        self._conn = conn
        self._lock = lock_of(conn)
        self._voice_ok = voice_ok
        self._audit_keep = audit_keep
        self._warned: set[tuple[str, str, str]] = set()

    def get(self, user: str) -> UserSettings:
        """The user's effective settings (defaults for anything unset or no longer valid)."""
        with self._lock:
            return self._effective(user, self._stored(user), warn=True)

    def apply(self, user: str, values: dict[str, Any], *, changed_by: str) -> AppliedUpdate:
        """Apply ``values`` (all or nothing) in one transaction and audit each real change.

        Changing the language while a voice is set that the voice check does not
        offer for the new language also resets the voice to the default (audited).
        """
        if not isinstance(values, dict) or not values:
            raise InvalidSettings("no settings given")
        clean = {key: validate(key, value) for key, value in values.items() if key != "voice"}
        with write_transaction(self._conn):
            if self._conn.execute("SELECT 1 FROM users WHERE name = ?", (user,)).fetchone() is None:
                raise InvalidSettings(f"no user named {user[:64]!r}")
            stored = self._stored(user)
            old = self._effective(user, stored, warn=False)
            language = clean.get("language", old.language)
            if "voice" in values:
                clean["voice"] = validate(
                    "voice", values["voice"], voice_ok=self._voice_ok, language=language
                )
            elif (
                old.voice is not None
                and language != old.language
                and not self._voice_valid(old.voice, language)
            ):
                clean["voice"] = None
            before, defaults = old.to_dict(), UserSettings().to_dict()
            changed_at, changes = _now(), []
            for key in KEYS:
                if key not in clean:
                    continue
                new = clean[key]
                if new == defaults[key]:
                    if key in stored:
                        self._conn.execute(
                            "DELETE FROM settings WHERE user = ? AND key = ?", (user, key)
                        )
                elif stored.get(key, _MISSING) != new:
                    self._conn.execute(
                        "INSERT INTO settings (user, key, value) VALUES (?, ?, ?) "
                        "ON CONFLICT (user, key) DO UPDATE SET value = excluded.value",
                        (user, key, json.dumps(new)),
                    )
                if before[key] == new:
                    continue
                cur = self._conn.execute(
                    "INSERT INTO settings_log "
                    "(user, changed_by, changed_at, key, old_value, new_value) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (user, changed_by, changed_at, key, json.dumps(before[key]), json.dumps(new)),
                )
                changes.append(
                    SettingsChange(
                        id=int(cur.lastrowid or 0),
                        user=user,
                        changed_by=changed_by,
                        changed_at=changed_at,
                        key=key,
                        old=before[key],
                        new=new,
                    )
                )
            if changes:
                self._prune_log(user)
            after = UserSettings(**(before | {k: clean[k] for k in clean}))
        return AppliedUpdate(user=user, old=old, new=after, changes=tuple(changes))

    def update(self, user: str, values: dict[str, Any], *, changed_by: str) -> UserSettings:
        """:meth:`apply`, returning only the new settings."""
        return self.apply(user, values, changed_by=changed_by).new

    def history(self, user: str, *, limit: int = 50) -> list[SettingsChange]:
        """The most recent changes, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, user, changed_by, changed_at, key, old_value, new_value "
                "FROM settings_log WHERE user = ? ORDER BY id DESC LIMIT ?",
                (user, limit),
            ).fetchall()
        return [
            SettingsChange(
                id=r["id"],
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
        """Id of the newest audit entry (0 if none): cheap to poll for outside changes.
        Ids only grow, also when old entries are pruned."""
        with self._lock:
            row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'settings_log'")
            found = row.fetchone()
        return int(found[0]) if found else 0

    def users_changed_since(self, change_id: int) -> list[str]:
        """Users with an audit entry newer than ``change_id``."""
        return sorted(self.poll(change_id)[1])

    def poll(self, after_id: int) -> tuple[int, dict[str, int]]:
        """One consistent read for a watcher: ``(newest id, {user: their newest id})``
        over the audit entries after ``after_id``. Pass the newest id next time; skip
        a user whose id is not newer than the change already delivered for them."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT user, MAX(id) AS id FROM settings_log WHERE id > ? GROUP BY user",
                (after_id,),
            ).fetchall()
        changed = {r["user"]: int(r["id"]) for r in rows}
        return max([after_id, *changed.values()]), changed

    def _stored(self, user: str) -> dict[str, Any]:
        rows = self._conn.execute(
            "SELECT key, value FROM settings WHERE user = ?", (user,)
        ).fetchall()
        stored = {}
        for r in rows:
            try:
                stored[r["key"]] = json.loads(r["value"])
            except ValueError:
                stored[r["key"]] = _UNREADABLE
        return stored

    def _effective(self, user: str, stored: dict[str, Any], *, warn: bool) -> UserSettings:
        """Stored values that are still valid over the defaults."""
        values: dict[str, Any] = {}
        # language first: whether a voice is valid depends on it
        for key in sorted(stored, key=lambda k: k != "language"):
            raw = stored[key]
            try:
                if raw is _UNREADABLE:
                    raise InvalidSettings(f"{key} is not readable")
                values[key] = validate(
                    key, raw, voice_ok=self._voice_ok, language=values.get("language", "en")
                )
            except InvalidSettings as exc:
                if warn:
                    self._warn_once(user, key, raw, exc)
        return UserSettings(**values)

    def _voice_valid(self, voice: str, language: str) -> bool:
        try:
            validate("voice", voice, voice_ok=self._voice_ok, language=language)
        except InvalidSettings:
            return False
        return True

    def _warn_once(self, user: str, key: str, raw: Any, exc: InvalidSettings) -> None:
        marker = (user, key, repr(raw)[:200])
        if marker in self._warned:
            return
        if len(self._warned) >= _WARNED_CAP:
            self._warned.clear()
        self._warned.add(marker)
        log.warning(
            "stored setting %s of %s is ignored, the default is used instead: %s",
            key,
            user,
            exc,
        )

    def _prune_log(self, user: str) -> None:
        self._conn.execute(
            "DELETE FROM settings_log WHERE user = ? AND id <= ("
            "SELECT id FROM settings_log WHERE user = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (user, user, self._audit_keep),
        )


_MISSING = object()
_UNREADABLE = object()
