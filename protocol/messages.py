"""One dataclass per protocol message.

Every message is a keyword-only dataclass with a private ``_TYPE`` (the
kebab-case wire type). Field names are the JSON keys inside ``data``. Media
messages (``camera-frame``, ``audio-chunk``, ``speech-chunk``) carry a
``payload`` of raw bytes and travel as binary websocket messages; all others
travel as JSON text. ``protocol/codec.py`` turns them into bytes and back.

``__repr__`` shows payload sizes, never payload bytes, so a message can be
logged safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(kw_only=True)
class Message:
    """Base of all messages. ``id`` is an optional client-chosen correlation id."""

    _TYPE: ClassVar[str] = ""
    _BINARY: ClassVar[bool] = False
    id: str | None = None

    @classmethod
    def wire_type(cls) -> str:
        """The kebab-case ``type`` this message has on the wire."""
        return cls._TYPE

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "payload":
                parts.append(f"payload=<{len(value)} bytes>")
            elif f.name == "token":
                parts.append("token=<redacted>")
            elif value is not None:
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


# --- session -------------------------------------------------------------


@dataclass(kw_only=True, repr=False)
class Hello(Message):
    """Client -> server, first message. ``token`` authenticates the user."""

    _TYPE = "hello"
    protocol: int
    token: str
    client: str = ""
    capabilities: list[str] = field(default_factory=list)
    resume: str | None = None


@dataclass(kw_only=True)
class Limits:
    """What the server accepts; the client must stay inside these."""

    max_frame_bytes: int
    max_message_bytes: int
    max_text_bytes: int
    audio_rate: int
    max_audio_ms: int
    frame_age_budget_ms: int


@dataclass(kw_only=True)
class Capabilities:
    """Which server capabilities are live; ``reasons`` says why one is not."""

    vision: bool = False
    speech_in: bool = False
    speech_out: bool = False
    text_reading: bool = False
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True, repr=False)
class Ready(Message):
    """Server -> client, the answer to a good ``hello``."""

    _TYPE = "ready"
    protocol: int
    session: str
    resume: str
    user: str
    role: str
    limits: Limits
    capabilities: Capabilities
    resumed: bool = False
    manages: list[str] = field(default_factory=list)
    listening: str | None = None
    """On a resumed session, the listening mode the server kept (``hands-free`` or
    ``push-to-talk``); the phone restarts its microphone stream in that mode."""


@dataclass(kw_only=True, repr=False)
class Error(Message):
    """Either direction. ``fatal`` means the sender closes the connection next."""

    _TYPE = "error"
    code: str
    message: str
    fatal: bool = False
    ref: str | None = None


@dataclass(kw_only=True, repr=False)
class Ping(Message):
    """Either direction; answered by ``pong`` echoing ``t``."""

    _TYPE = "ping"
    t: int | None = None


@dataclass(kw_only=True, repr=False)
class Pong(Message):
    """Answer to ``ping``."""

    _TYPE = "pong"
    t: int | None = None


@dataclass(kw_only=True, repr=False)
class Bye(Message):
    """Either direction: the sender is about to close normally."""

    _TYPE = "bye"
    reason: str = ""


# --- media in ------------------------------------------------------------


@dataclass(kw_only=True, repr=False)
class CameraFrame(Message):
    """Client -> server, binary. One JPEG; ``ts`` is capture time (ms, client clock)."""

    _TYPE = "camera-frame"
    _BINARY = True
    seq: int
    ts: int
    width: int
    height: int
    format: str = "jpeg"
    payload: bytes = b""


@dataclass(kw_only=True, repr=False)
class AudioStart(Message):
    """Client -> server: the user starts talking (push-to-talk or hands-free)."""

    _TYPE = "audio-start"
    rate: int = 16000
    format: str = "pcm16"
    channels: int = 1
    mode: str = "push-to-talk"


@dataclass(kw_only=True, repr=False)
class AudioChunk(Message):
    """Client -> server, binary. PCM16 little-endian mono at ``rate`` Hz."""

    _TYPE = "audio-chunk"
    _BINARY = True
    seq: int
    ts: int
    rate: int = 16000
    payload: bytes = b""


@dataclass(kw_only=True, repr=False)
class AudioStop(Message):
    """Client -> server: end of the utterance started by ``audio-start``."""

    _TYPE = "audio-stop"


@dataclass(kw_only=True, repr=False)
class Question(Message):
    """Client -> server: a typed question about what the camera sees."""

    _TYPE = "question"
    text: str
    intent: str | None = None
    """``read`` (read all text in view, verbatim) or ``continue`` (go on reading);
    ``None``: a question for the vision model (spoken requests are recognised too)."""


@dataclass(kw_only=True, repr=False)
class Interrupt(Message):
    """Client -> server: stop talking now. Server -> client: flush playback now."""

    _TYPE = "interrupt"
    reason: str = ""


# --- results out ---------------------------------------------------------


@dataclass(kw_only=True, repr=False)
class TranscriptMsg(Message):
    """Server -> client: what the server heard."""

    _TYPE = "transcript"
    text: str
    language: str = ""
    final: bool = True
    confidence: float | None = None
    audio_ms: int = 0


@dataclass(kw_only=True)
class HazardInfo:
    """One obstacle. ``direction`` is a clock position or left/ahead/right."""

    label: str
    direction: str = ""
    distance_m: float | None = None
    urgency: str = "normal"


@dataclass(kw_only=True, repr=False)
class ObservationMsg(Message):
    """Server -> client: what the vision engine made of one frame."""

    _TYPE = "observation"
    frame_seq: int | None = None
    reason: str = ""
    hazards: list[HazardInfo] = field(default_factory=list)
    signs: list[str] = field(default_factory=list)
    scene: str = ""
    answer: str | None = None
    partial: bool = False
    latency_ms: int | None = None


@dataclass(kw_only=True, repr=False)
class SpeechStart(Message):
    """Server -> client: an utterance begins; ``text`` is what will be spoken."""

    _TYPE = "speech-start"
    utterance: str
    priority: str
    text: str
    rate: int = 16000
    format: str = "pcm16"


@dataclass(kw_only=True, repr=False)
class SpeechChunk(Message):
    """Server -> client, binary. PCM16 little-endian mono audio of an utterance."""

    _TYPE = "speech-chunk"
    _BINARY = True
    utterance: str
    seq: int
    rate: int = 16000
    payload: bytes = b""


@dataclass(kw_only=True, repr=False)
class SpeechStop(Message):
    """Server -> client: the utterance ended (``done``, ``interrupted``, ``stale``)."""

    _TYPE = "speech-stop"
    utterance: str
    reason: str = "done"


# --- settings ------------------------------------------------------------


@dataclass(kw_only=True, repr=False)
class SettingsGet(Message):
    """Ask for a user's settings; a caregiver names the user, a user omits it."""

    _TYPE = "settings-get"
    user: str | None = None


@dataclass(kw_only=True)
class SettingsChangeInfo:
    """One audited settings change: when (UTC ISO 8601), by whom, what."""

    at: str
    by: str
    key: str
    old: Any = None
    new: Any = None


@dataclass(kw_only=True)
class Choice:
    """One option a caregiver may pick (a voice, a language): the ``value`` to send
    back in ``settings-update`` and a ``label`` to show."""

    value: str
    label: str = ""


@dataclass(kw_only=True, repr=False)
class CapabilitiesMsg(Message):
    """Server -> client: what the server can do changed (a model finished loading or
    failed). Same fields as ``ready.capabilities``; reasons are short sentences for
    the user."""

    _TYPE = "capabilities"
    vision: bool = False
    speech_in: bool = False
    speech_out: bool = False
    text_reading: bool = False
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True, repr=False)
class Settings(Message):
    """Server -> client: a user's current settings (and, for caregivers, recent changes)."""

    _TYPE = "settings"
    user: str
    values: dict[str, Any] = field(default_factory=dict)
    changes: list[SettingsChangeInfo] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    """To a phone: the keys this change touched (empty in a reply to ``settings-get``)."""
    summary: str = ""
    """To a phone: one short sentence in the user's language saying what changed."""
    connected: bool | None = None
    """To a caregiver: whether the person has a live phone session now."""
    voices: list[Choice] = field(default_factory=list)
    """To a caregiver: the voice ids valid for the person's language."""
    languages: list[Choice] = field(default_factory=list)
    """To a caregiver: the languages the server offers."""
    warnings: list[str] = field(default_factory=list)
    """To a caregiver: problems with the stored settings (a voice that failed, ...)."""


@dataclass(kw_only=True, repr=False)
class SettingsUpdate(Message):
    """Caregiver -> server: change some of a user's settings."""

    _TYPE = "settings-update"
    user: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


ALL_MESSAGES: tuple[type[Message], ...] = (
    Hello,
    Ready,
    Error,
    Ping,
    Pong,
    Bye,
    CameraFrame,
    AudioStart,
    AudioChunk,
    AudioStop,
    Question,
    Interrupt,
    TranscriptMsg,
    ObservationMsg,
    SpeechStart,
    SpeechChunk,
    SpeechStop,
    SettingsGet,
    Settings,
    SettingsUpdate,
    CapabilitiesMsg,
)

MESSAGE_TYPES: dict[str, type[Message]] = {m.wire_type(): m for m in ALL_MESSAGES}
