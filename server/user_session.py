"""A phone's connection: small tasks that each own one thing.

    control    interrupt / ping / settings / questions: never waits on anything slow
    media      frames -> newest-frame slot -> detector -> model slot -> analysis
    listening  audio -> recogniser (VAD, Whisper) -> transcript -> question
    speaker    narrator -> TTS -> paced speech chunks

``interrupt`` acts in the receive task itself (the narrator's queue is
cleared and the current utterance cut before the next message is read); its
acknowledgement is sent by the control task. What a person would expect to
find again after a dropped connection (the narrator's memory of what was
said, a pending warning, hands-free listening) lives in ``UserState``, which
the server keeps for the resume window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from protocol import (
    AudioChunk,
    AudioStart,
    AudioStop,
    CameraFrame,
    Capabilities,
    CapabilitiesMsg,
    ErrorCode,
    Interrupt,
    Message,
    Question,
    Settings,
    SettingsGet,
    SettingsUpdate,
)
from server.auth import Account
from server.context import ServerContext
from server.jpeg import jpeg_scans
from server.languages import is_stop_request, phrase, settings_summary
from server.link import Link
from server.listening import Listening
from server.media import Asked, MediaPipeline
from server.narrator import Narrator
from server.ratelimit import frame_cost
from server.reading import Reading
from server.session import BaseSession
from server.settings import UserSettings
from server.speaker import Speaker
from speech.tts import VoiceOptions
from speech.voices import VoiceFallback
from vision.change import ChangeOptions
from vision.reading import is_read_request

log = logging.getLogger("seealoud.user")

MAX_QUESTION_CHARS = 500


def detector_options(settings: UserSettings) -> ChangeOptions:
    """The change detector for these settings: quiet mode looks only when something
    changes (no heartbeat, not even the slow one while the camera sees nothing)."""
    if settings.quiet:
        return ChangeOptions(heartbeat_s=None, blind_heartbeat_s=None)
    return ChangeOptions(heartbeat_s=settings.heartbeat_s)


@dataclass(kw_only=True)
class UserState:
    """What outlives a dropped connection for the resume window."""

    narrator: Narrator
    listening: str | None = None


class UserSession(BaseSession):
    """See the module docstring."""

    role = "user"

    def __init__(
        self,
        *,
        ctx: ServerContext,
        account: Account,
        session_id: str,
        link: Link,
        settings: UserSettings,
        state: UserState | None = None,
    ) -> None:
        super().__init__(ctx=ctx, account=account, session_id=session_id, link=link)
        self.settings = settings
        budget = ctx.config.frame_age_budget_ms / 1000
        if state is None:
            state = UserState(narrator=Narrator(settings, frame_age_budget_s=budget))
        self.state = state
        self.narrator = state.narrator
        self.narrator.settings = settings
        self.speaker = Speaker(
            narrator=self.narrator,
            send=self.send,
            tts=ctx.services.tts_if_ready,
            voice=self._voice,
            rate=ctx.config.audio_rate,
            on_voice_fallback=self._voice_failed,
            metrics=ctx.metrics,
            stall_s=ctx.config.speech_stall_s,
            hold=lambda: self.listening.user_talking,
        )
        self.media = MediaPipeline(
            ctx=ctx,
            session_id=session_id,
            narrator=self.narrator,
            offer=self.speaker.offer,
            send=self.send,
            send_error=self.send_error,
            language=lambda: self.settings.language,
            detector=detector_options(settings),
        )
        self.listening = Listening(
            ctx=ctx,
            session_id=session_id,
            send=self.send,
            send_error=self.send_error,
            language=lambda: self.settings.language,
            on_question=self.ask,
            on_nothing_heard=lambda: self.speaker.offer(self.narrator.notice("not_heard")),
            resume_mode=state.listening,
            on_talk_end=self.speaker.wake,
        )
        self.reading = Reading(
            ctx=ctx,
            narrator=self.narrator,
            offer=self.speaker.offer,
            send_error=self.send_error,
            latest=self.media.recent,
            dark=lambda: self.media.detector.dark,
            account=account.name,
        )
        self.media.signs = self.reading.signs
        self._caps = ctx.services.capabilities()
        self._unsubscribe: list[Callable[[], None]] = []
        self._reading_task: asyncio.Task[None] | None = None
        self._frame_budget = ctx.frame_budgets.take(account.name)

    # --- lifecycle ---------------------------------------------------------------

    def tasks(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
            self.speaker.run,
            self.listening.run,
        ]
        if self.ctx.services.analyzer is not None:
            loops += [self.media.run_detector, self.media.run_analysis]
        return loops

    def opened(self) -> None:
        """Subscribe to live settings and capability changes; speak what was pending."""
        hub = self.ctx.hub
        hub.seen(self.account.name, self.settings)
        self._unsubscribe = [
            hub.subscribe(self.account.name, self._settings_changed),
            hub.subscribe_capabilities(self._capabilities_changed),
        ]
        self.speaker.wake()  # a warning pending from before a reconnect

    def closed(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        self.speaker.cut("user")
        self.media.close()
        self.state.listening = self.listening.mode_to_resume()

    # --- routing (the receive task: it awaits only its own replies) --------------

    async def route(self, message: Message, received_at: float) -> None:
        match message:
            case CameraFrame():
                if not await self.admitted("frames", ref=message.id):
                    return
                problem = self.media.frame_problem(message)
                if problem is None:
                    if not await self._affordable(message):
                        return
                    self.media.put(message, received_at)
                else:
                    self.media.frames_rejected += 1
                    self.ctx.metrics.frames_rejected += 1
                    await self.send_error(*problem, ref=message.id)
            case AudioStart() | AudioChunk() | AudioStop():
                if isinstance(message, AudioChunk) and not await self.admitted(
                    "audio", cost=len(message.payload)
                ):
                    return
                if isinstance(message, AudioStart) and message.mode != "hands-free":
                    self._user_talks()
                refusal = self.listening.offer(message)
                if refusal is not None:
                    await self.send_error(ErrorCode.CAPABILITY_UNAVAILABLE, refusal, ref=message.id)
            case Interrupt():
                if message.reason == "user-talking":  # a new question coming: not "never mind"
                    self._user_talks()
                else:
                    self._stop()
                await self.send(Interrupt(reason="user", id=message.id))
            case _:
                await super().route(message, received_at)

    async def _affordable(self, frame: CameraFrame) -> bool:
        """Whether the account's frame budget (all its sessions together) covers this
        frame's decode cost; if not, it is dropped and the client told, at most once a
        second. Checked after ``frame_problem``: the size is the JPEG's own."""
        payload = frame.payload
        cost = frame_cost(frame.width, frame.height, scans=jpeg_scans(payload), size=len(payload))
        if self._frame_budget.allow(time.monotonic(), cost):
            return True
        rate = self._frame_budget.rate_per_s
        await self.limited(
            "frame-cost",
            f"this account's frames cost more to decode than {rate:g} 640x480 frames a "
            f"second (this one counts as {cost:.1f}); some were dropped: send 640x480",
            ref=frame.id,
        )
        return False

    def _user_talks(self) -> None:
        """Stop, or the user started talking: silence now, drop what was queued."""
        self.narrator.interrupt()
        self.speaker.cut("user")

    def _stop(self) -> None:
        """Stop (the button, or a lone "stop"): silence, and never mind the questions
        asked: the answer to one already with the model is not spoken when it comes
        (its warnings are: they are not the question's). A "read this" still with the
        reader is dropped too: a blind-user pass pressed Stop after "Reading." and 14 s
        later heard the page read aloud."""
        self._user_talks()
        self.narrator.hush(time.monotonic())
        self.media.stop_questions()
        self._drop_reading()

    def _drop_reading(self) -> None:
        """The text reading asked for last is not wanted any more (Stop, or a new one)."""
        if self._reading_task is not None:
            self._reading_task.cancel()
            self._reading_task = None

    # --- control -----------------------------------------------------------------

    async def handle_control(self, message: Message) -> None:
        match message:
            case Question():
                if message.intent not in (None, "read", "continue"):
                    await self.send_error(
                        ErrorCode.BAD_MESSAGE,
                        "question intent must be read or continue (or left out)",
                        ref=message.id,
                    )
                    return
                # narrator: a typed "stop" is Stop, as cheap as `interrupt`: never rate-limited
                stop = message.intent is None and is_stop_request(message.text)
                if stop or await self.admitted("questions", ref=message.id):
                    await self.ask(message.text, message.id, intent=message.intent)
            case SettingsGet():
                if message.user not in (None, self.account.name):
                    await self.send_error(
                        ErrorCode.FORBIDDEN,
                        "a phone may read only its own settings",
                        ref=message.id,
                    )
                    return
                await self.send(
                    Settings(user=self.account.name, values=self.settings.to_dict(), id=message.id)
                )
            case SettingsUpdate():
                await self.send_error(
                    ErrorCode.FORBIDDEN, "only a caregiver can change settings", ref=message.id
                )
            case _:
                await super().handle_control(message)

    async def ask(
        self,
        text: str,
        ref: str | None,
        *,
        intent: str | None = None,
        unsure: bool = False,
        cut: bool = False,
    ) -> None:
        """A typed or spoken question: never silence after it. A spoken one the
        recogniser was unsure of is answered with what was heard first, so a mishearing
        is noticed; one cut at the length limit (``cut``) says that only its first part
        was answered."""
        text = text.strip()
        # narrator: "I heard" is said on its own before the answer (the answer keeps its
        # word limit); "stop" / "停" is Stop, never a question for the vision model.
        heard, too_long = unsure and bool(text), False
        if intent is None and is_stop_request(text):
            self._stop()
            await self.send(Interrupt(reason="user", id=ref))
            return
        if intent is None:
            intent = is_read_request(text)
        if intent in ("read", "continue"):
            # OCR takes up to a second: it runs beside the control task, newest request wins.
            self._drop_reading()
            self._reading_task = self.spawn(self.reading.request(intent, ref), "reading")
            return
        if not text:
            await self.send_error(ErrorCode.BAD_MESSAGE, "the question is empty", ref=ref)
            self.speaker.offer(self.narrator.notice("not_heard"))
            return
        if cut or len(text) > MAX_QUESTION_CHARS:
            if len(text) > MAX_QUESTION_CHARS:
                head = text[:MAX_QUESTION_CHARS]
                text = head.rsplit(" ", 1)[0] or head
            too_long = True
        services = self.ctx.services
        if not services.vision_ready():
            reason = services.capabilities().reasons.get("vision", "Vision is unavailable.")
            await self.send_error(ErrorCode.CAPABILITY_UNAVAILABLE, reason, ref=ref)
            self.speaker.offer(self.narrator.notice("no_vision"))
            return
        if self.media.detector.dark:  # a black frame is never sent to the model
            self.speaker.offer(self.narrator.dark_answer(time.monotonic()))
            return
        if self.media.recent() is None:
            # No frame, or none for a while (the camera is off): an answer about an old
            # view would be wrong about where the user is now.
            await self.send_error(
                ErrorCode.NO_FRAME,
                "no recent camera frame; start the camera, then ask",
                ref=ref,
            )
            self.speaker.offer(self.narrator.notice("camera_off"))
            return
        self.speaker.offer(self.narrator.heard(text if heard else None, too_long=too_long))
        self.media.ask(Asked(text=text, ref=ref))

    # --- live changes (hub callbacks: run on the loop, must not block) -----------

    def _settings_changed(self, settings: UserSettings, changed: list[str]) -> None:
        if "voice" in changed or "language" in changed:  # a new voice gets a fresh chance
            self.ctx.services.voice_problems.pop(self.account.name, None)
        self.settings = settings
        self.narrator.settings = settings
        self.media.detector.options = detector_options(settings)
        summary = settings_summary(settings.to_dict(), changed, settings.language)
        if "language" in changed and self.ctx.services.language_problem(settings.language):
            # Told now, not first when they talk and are not understood (a blind-user pass
            # set French on an English-only recogniser and heard only "Langue : Français.").
            summary = f"{summary} {phrase(settings.language, 'cannot_hear')}".strip()
        message = Settings(
            user=self.account.name, values=settings.to_dict(), changed=changed, summary=summary
        )
        self.later(lambda: self.send(message))
        if summary:  # said in the user's own voice, like everything else SeeAloud says
            self.speaker.offer(self.narrator.told(summary))

    def _capabilities_changed(self, caps: Capabilities) -> None:
        if caps == self._caps:
            return
        self._caps = caps
        message = CapabilitiesMsg(
            vision=caps.vision,
            speech_in=caps.speech_in,
            speech_out=caps.speech_out,
            text_reading=caps.text_reading,
            reasons=dict(caps.reasons),
        )
        self.later(lambda: self.send(message))

    def _voice_failed(self, fallback: VoiceFallback) -> None:
        """The chosen voice did not speak (the default did): tell the caregiver why."""
        self.ctx.services.voice_problems[self.account.name] = (
            f"The voice {fallback.requested[:40]!r} could not be used ({fallback.reason}); "
            "the default voice of the language speaks instead."
        )

    def _voice(self) -> VoiceOptions:
        s = self.settings
        return VoiceOptions(
            language=s.language, voice=s.voice, rate_wpm=s.speech_rate, volume=s.volume
        )

    def stats_line(self) -> str:
        """One log line about this session's work (sizes and counts only)."""
        return stats_line(self.media, self.narrator)


def stats_line(m: MediaPipeline, narrator: Narrator) -> str:
    st = narrator.stats
    return (
        f"frames received={m.slot.received} dropped={m.slot.dropped} "
        f"rejected={m.frames_rejected}, detector fired {m.detector_fires}, "
        f"analyses {m.analyses}; spoke {st.spoken}, deduplicated {st.deduplicated}, "
        f"stale dropped {st.stale_dropped}"
    )
