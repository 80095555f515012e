"""What a session may use: configuration, metrics, stores, models, the live hub.

A session gets a ``ServerContext``, never the server: no session can reach
the listening socket, other sessions' state or the lifecycle, and nothing
imports ``server/app.py``. Where work runs (the table issue 11 asks to be true):

| work                                    | where                                    |
| --------------------------------------- | ---------------------------------------- |
| decode, validate, route a message       | event loop (receive task), < 1 ms        |
| control: interrupt, ping, bye, settings | event loop (control task); never awaits  |
|                                         | media, speech-in, OCR or the model       |
| "read this" (OCR)                       | a task beside control, on ``ocr``        |
| hands-free VAD (Silero, 32 ms windows)  | event loop (listening task), < 1 ms a    |
|                                         | 20 ms chunk; the decode is off the loop  |
| SQLite (accounts, settings, audit)      | ``db`` runtime.Worker thread             |
| change detector (JPEG decode + score)   | ``detector_pool``: runtime.WorkerPool,   |
|                                         | one thread per CPU                       |
| vision model                            | the backend's runtime.Worker thread      |
| JPEG decode/resize for the model        | ``vision.worker`` image runtime.Worker   |
| speech recognition (Whisper decode)     | the recogniser's runtime.Worker thread   |
| speech synthesis (espeak-ng)            | a child process (runtime.ProcessWorker   |
|                                         | ``tts-espeak``), one dispatcher thread   |
| text reading (OCR), signs               | ``ocr`` runtime.Worker thread            |
| /metrics rendering                      | ``metrics`` runtime.Worker thread        |
| model loading                           | daemon threads (runtime.Loader)          |
| hub reachability probe (start-up)       | one daemon thread, bounded by a timeout  |
| ``espeak-ng --voices`` (voice list)     | once, by the synthesiser's loader        |
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from protocol import Capabilities, Choice
from runtime import Loader, Worker, WorkerPool
from server.analysis import Analyzer
from server.auth import UserStore
from server.config import ServerConfig
from server.hub import Hub
from server.languages import LANGUAGES
from server.metrics import ServerMetrics
from server.ratelimit import AccountBudgets
from server.settings import SettingsStore
from speech.asr import SpeechRecognizer
from speech.errors import SpeechError
from speech.tts import SpeechSynthesizer

T = TypeVar("T")

_LOADING = {
    "vision": "Vision is still loading.",
    "speech_in": "Spoken questions are still loading.",
    "speech_out": "Spoken answers are still loading.",
    "text_reading": "Text reading is still loading.",
}
_SHORT = {
    "vision": "Vision is unavailable on this server.",
    "speech_in": "Spoken questions are unavailable; type instead.",
    "speech_out": "Spoken answers are unavailable; answers are shown as text.",
    "text_reading": "Text reading is unavailable.",
}


@dataclass(kw_only=True)
class Services:
    """The models a session may call, each with its loading state."""

    analyzer: Analyzer | None = None
    vision: Loader | None = None
    tts: Loader | None = None
    tts_model: SpeechSynthesizer | None = None
    asr: Loader | None = None
    asr_model: SpeechRecognizer | None = None
    text: Loader | None = None
    text_model: Any = None
    ocr: Worker = field(default_factory=lambda: Worker("ocr", max_pending=4, stall_s=20.0))
    voice_problems: dict[str, str] = field(default_factory=dict)
    """Per user: the last voice that failed at run time (shown to their caregiver)."""

    def vision_ready(self) -> bool:
        return self.analyzer is not None and (self.vision is None or self.vision.ready)

    def tts_if_ready(self) -> SpeechSynthesizer | None:
        return self.tts_model if self.tts is not None and self.tts.ready else None

    def asr_if_ready(self) -> SpeechRecognizer | None:
        return self.asr_model if self.asr is not None and self.asr.ready else None

    def text_if_ready(self) -> Any:
        return self.text_model if self.text is not None and self.text.ready else None

    def voices(self, language: str) -> list[Choice]:
        """The voice ids valid for ``language``, as espeak-ng lists them."""
        try:
            from speech.voices import list_voices

            return [Choice(value=v.id, label=v.name) for v in list_voices(language)]
        except SpeechError:
            return []

    def language_problem(self, language: object) -> str | None:
        """Why spoken questions in ``language`` cannot be understood with this server's
        speech model (known from its name before it has loaded), or None."""
        asr = self.asr_model if self.asr is not None else None
        if not isinstance(language, str) or asr is None or language not in LANGUAGES:
            return None  # an unknown code is the settings check's to refuse
        return asr.cannot_hear_reason(language, LANGUAGES[language].name)

    def warnings(self, user: str, language: str | None = None) -> list[str]:
        """What the caregiver should know about ``user``'s settings on this server: a
        voice that failed at run time, a language the speech model cannot hear."""
        out = []
        if problem := self.voice_problems.get(user):
            out.append(problem)
        if language is not None and (problem := self.language_problem(language)):
            out.append(f"Spoken questions will not be understood: {problem.rstrip('.')}.")
        return out

    def details(self) -> dict[str, str]:
        """Operator text for ``/readyz`` and the log: why each capability is off."""
        out: dict[str, str] = {}
        if self.analyzer is None:
            out["vision"] = "no vision backend is configured"
        elif self.vision is not None and not self.vision.ready:
            out["vision"] = self.vision.reason()
        for name, loader, off in (
            ("speech_in", self.asr, "speech input is turned off on this server"),
            ("speech_out", self.tts, "speech output is turned off on this server"),
            ("text_reading", self.text, "text reading is turned off on this server"),
        ):
            if loader is None:
                out[name] = off
            elif not loader.ready:
                out[name] = loader.reason()
        return out

    def capabilities(self) -> Capabilities:
        """What a client may use now; reasons are one short sentence for the user."""
        caps = Capabilities(
            vision=self.vision_ready(),
            speech_in=self.asr_if_ready() is not None,
            speech_out=self.tts_if_ready() is not None,
            text_reading=self.text_if_ready() is not None,
        )
        loaders = {
            "vision": self.vision,
            "speech_in": self.asr,
            "speech_out": self.tts,
            "text_reading": self.text,
        }
        for name, loader in loaders.items():
            if getattr(caps, name):
                continue
            if loader is not None and loader.status in ("loading", "not-loaded"):
                caps.reasons[name] = _LOADING[name]  # it is said again when it is ready
            else:
                caps.reasons[name] = _SHORT[name]
        return caps


class LoginLimiter(Protocol):
    """Failed logins per source address (``server/ratelimit.py``)."""

    def retry_after(self, peer: str, now: float) -> float:
        """Seconds ``peer`` must wait before trying again (0: may try now)."""
        ...

    def failed(self, peer: str, now: float) -> bool:
        """Count a failure; whether it deserves a log line (floods are summarised)."""
        ...

    def succeeded(self, peer: str) -> None: ...


@dataclass(kw_only=True)
class ServerContext:
    """Everything a session may use; see the module docstring."""

    config: ServerConfig
    metrics: ServerMetrics
    accounts: UserStore
    settings: SettingsStore
    hub: Hub
    services: Services
    db: Worker
    detector_pool: WorkerPool
    login_limiter: LoginLimiter
    frame_budgets: AccountBudgets
    """Per account, all its sessions together: the decode cost of its camera frames."""
    reading_accounts: set[str] = field(default_factory=set)
    """Accounts with a text reading on the reader now (one at a time each)."""
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a short blocking call (SQLite) on the database worker."""
        return await self.db.submit(lambda: fn(*args))
