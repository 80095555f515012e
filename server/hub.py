"""Live changes, one subscription: settings and capabilities reach each session once.

A caregiver's change over the protocol, an operator's ``seealoud settings set``
in another process, and a model that finished loading all arrive here, and each
reaches every subscribed session exactly once, through one path:

- ``publish(user, settings)`` delivers a user's new settings to that user's
  sessions, unless they equal what was last delivered for the user (so the
  audit-log poll that also sees a protocol change does not deliver it twice).
- ``watch(store)`` polls the settings audit log (off the event loop) for
  changes made by other processes and publishes them, within ``every_s``.
- ``capabilities(caps)`` delivers a changed capability set to every session.

Subscribers are plain callables run on the event loop; they must not block
(sessions queue what they need to send).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from protocol import Capabilities
from server.settings import SettingsStore, UserSettings

log = logging.getLogger("seealoud.hub")

SettingsListener = Callable[[UserSettings, list[str]], None]
CapabilityListener = Callable[[Capabilities], None]
OffLoop = Callable[..., Awaitable[Any]]


class Hub:
    """See the module docstring."""

    def __init__(self) -> None:
        self._settings: dict[str, list[SettingsListener]] = {}
        self._caps: list[CapabilityListener] = []
        self._delivered: dict[str, dict[str, Any]] = {}

    def subscribe(self, user: str, listener: SettingsListener) -> Callable[[], None]:
        """Hear ``user``'s settings changes; returns the unsubscribe function."""
        self._settings.setdefault(user, []).append(listener)

        def unsubscribe() -> None:
            listeners = self._settings.get(user, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._settings.pop(user, None)

        return unsubscribe

    def subscribe_capabilities(self, listener: CapabilityListener) -> Callable[[], None]:
        self._caps.append(listener)
        return lambda: self._caps.remove(listener) if listener in self._caps else None

    def seen(self, user: str, settings: UserSettings) -> None:
        """A session loaded ``settings`` itself: the baseline for what counts as a change
        (call before subscribing; a user with live sessions keeps their baseline)."""
        if not self._settings.get(user):
            self._delivered[user] = settings.to_dict()

    def publish(self, user: str, settings: UserSettings) -> int:
        """Deliver ``user``'s settings if they changed; returns how many sessions heard it."""
        new = settings.to_dict()
        old = self._delivered.get(user)
        if old == new:
            return 0
        self._delivered[user] = new
        changed = sorted(k for k in new if old is None or old.get(k) != new[k])
        listeners = list(self._settings.get(user, []))
        for listener in listeners:
            try:
                listener(settings, changed)
            except Exception:  # one broken session must not stop the others hearing it
                log.exception("a settings subscriber failed")
        return len(listeners)

    def capabilities(self, caps: Capabilities) -> None:
        for listener in list(self._caps):
            try:
                listener(caps)
            except Exception:
                log.exception("a capability subscriber failed")

    def connected(self, user: str) -> bool:
        """Whether ``user`` has a live session (a subscription) now."""
        return bool(self._settings.get(user))

    async def watch(self, store: SettingsStore, off_loop: OffLoop, every_s: float = 1.0) -> None:
        """Publish settings changed by another process (``seealoud settings set``) within
        ``every_s``: the audit log's newest id is polled off the event loop."""
        seen = await off_loop(store.last_change_id)
        while True:
            await asyncio.sleep(every_s)  # polling interval, not synchronisation
            try:
                latest = await off_loop(store.last_change_id)
                if latest == seen:
                    continue
                users = await off_loop(store.users_changed_since, seen)
                for user in users:
                    if user in self._settings:
                        self.publish(user, await off_loop(store.get, user))
                seen = latest
            except asyncio.CancelledError:
                raise
            except Exception:  # a busy or locked database: try again next round
                log.warning("settings watcher could not read the database; retrying")
