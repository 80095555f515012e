"""A caregiver's connection: settings administration only.

A caregiver reads and changes the settings of the people assigned to them,
sees recent changes, whether the person is connected now and which voices and
languages can be chosen. Nothing else: no frames, audio or questions. Unknown
and unassigned names get the same answer, so names cannot be discovered.
"""

from __future__ import annotations

import logging
import time

from protocol import (
    AudioChunk,
    AudioStart,
    AudioStop,
    CameraFrame,
    Choice,
    ErrorCode,
    Interrupt,
    Message,
    Question,
    Settings,
    SettingsChangeInfo,
    SettingsGet,
    SettingsUpdate,
)
from server.languages import LANGUAGES
from server.ratelimit import LogThrottle
from server.session import BaseSession
from server.settings import InvalidSettings, UserSettings

log = logging.getLogger("seealoud.caregiver")


class CaregiverSession(BaseSession):
    """See the module docstring."""

    role = "caregiver"
    _log_throttle = LogThrottle(interval_s=60.0)

    async def handle_control(self, message: Message) -> None:
        if isinstance(message, SettingsGet | SettingsUpdate) and not await self.admitted(
            "settings", ref=message.id
        ):
            return
        match message:
            case SettingsGet():
                user = await self._managed(message.user, message.id)
                if user is not None:
                    values = await self.ctx.off_loop(self.ctx.settings.get, user)
                    await self.send(await self._settings_message(user, values, message.id))
            case SettingsUpdate():
                await self._update(message)
            case Interrupt():
                await self.send(Interrupt(reason="user", id=message.id))
            case CameraFrame() | AudioStart() | AudioChunk() | AudioStop() | Question():
                await self.send_error(
                    ErrorCode.FORBIDDEN,
                    f"a caregiver session cannot send {message.wire_type()}: it only sets settings",
                    ref=message.id,
                )
            case _:
                await super().handle_control(message)

    async def _update(self, msg: SettingsUpdate) -> None:
        user = await self._managed(msg.user, msg.id)
        if user is None:
            return
        problem = self.ctx.services.language_problem(msg.values.get("language"))
        if problem is not None:
            await self.send_error(ErrorCode.INVALID_SETTINGS, problem, ref=msg.id)
            return
        try:
            new = await self.ctx.off_loop(
                lambda: self.ctx.settings.update(user, msg.values, changed_by=self.account.name)
            )
        except InvalidSettings as exc:
            await self.send_error(ErrorCode.INVALID_SETTINGS, str(exc), ref=msg.id)
            return
        held_back = self._log_throttle.note(user, time.monotonic())
        if held_back is not None:  # one line a minute per person, however many changes
            log.info(
                "settings of a user changed by %s: %s%s",
                self.account.name,
                ", ".join(sorted(msg.values))[:200],
                f" (and {held_back} more changes)" if held_back else "",
            )
        self.ctx.hub.publish(user, new)  # the person's live sessions hear it once, now
        await self.send(await self._settings_message(user, new, msg.id))

    async def _managed(self, named: str | None, ref: str | None) -> str | None:
        """The user named, if this caregiver may manage them; else an error (the same
        for an unknown name and an unassigned one)."""
        if not named:
            await self.send_error(ErrorCode.BAD_MESSAGE, "name the person", ref=ref)
            return None
        assigned = await self.ctx.off_loop(self.ctx.accounts.assigned_users, self.account.name)
        if named not in assigned:
            await self.send_error(
                ErrorCode.FORBIDDEN,
                "you may not manage that person (or there is no such person)",
                ref=ref,
            )
            return None
        return named

    async def _settings_message(self, user: str, values: UserSettings, ref: str | None) -> Settings:
        history = await self.ctx.off_loop(lambda: self.ctx.settings.history(user, limit=20))
        return Settings(
            user=user,
            values=values.to_dict(),
            changes=[
                SettingsChangeInfo(
                    at=c.changed_at, by=c.changed_by, key=c.key, old=c.old, new=c.new
                )
                for c in history
            ],
            connected=self.ctx.hub.connected(user),
            voices=self.ctx.services.voices(values.language),
            languages=[Choice(value=code, label=lang.name) for code, lang in LANGUAGES.items()],
            warnings=self.ctx.services.warnings(user, values.language),
            id=ref,
        )
