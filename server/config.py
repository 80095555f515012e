"""Server configuration: one dataclass, loaded from TOML and overridden by the CLI.

Defaults are the embedded set-up on the user's own laptop: SQLite next to the
user's data, the in-process model. Frames and audio are never written to disk.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def default_data_dir() -> Path:
    """Where the settings database lives unless configured (XDG data dir)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "seealoud"


class ConfigError(ValueError):
    """The configuration file or an option is invalid; the message says which."""


@dataclass(kw_only=True)
class ServerConfig:
    """Everything ``seealoud serve`` needs.

    Attributes:
        host: Interface to bind. ``0.0.0.0`` so a phone on the LAN can connect.
        port: TCP port; 0 picks a free one (tests).
        db_path: SQLite file for users, tokens and settings.
        tls_cert: PEM certificate; with ``tls_key`` the server speaks wss/https,
            which phone browsers require for camera and microphone.
        tls_key: PEM private key for ``tls_cert``.
        origins: Extra allowed ``Origin`` values for browser clients. Same-origin
            pages and clients that send no Origin (native apps) are always allowed.
        max_frame_bytes: Largest camera frame accepted. 640x480 JPEG is 30-90 KB;
            the default leaves room for 1280x720 at high quality.
        max_message_bytes: Hard websocket limit (``max_size``); above it the
            connection is closed with 1009. Between ``max_frame_bytes`` and this,
            a frame is refused with a non-fatal ``frame-too-large`` error.
        max_text_bytes: Largest JSON text message.
        max_audio_ms: Longest single utterance accepted from the microphone.
        audio_rate: Reference microphone rate the server asks for.
        frame_age_budget_ms: Observations about older frames are not spoken.
        hello_timeout_s: A connection that sends no ``hello`` in time is closed.
        log_level: Python logging level name.
        vision_backend: ``transformers`` (in process), ``openai`` (an
            OpenAI-compatible engine such as vLLM or SGLang at ``vlm_url``) or
            ``none`` (no vision: the server still relays speech and settings).
        model: Hub id or local path (in process), or the served model's name.
            None (the default) chooses by the machine: Qwen3-VL-8B in bf16 on a
            GPU with room for it, 4-bit or a smaller Qwen3-VL on a smaller GPU,
            the smallest Qwen3-VL on disk without a GPU (``vision.choice``).
        vlm_url: Base URL of the OpenAI-compatible engine, e.g.
            ``http://gpu-server:8000/v1``.
        device: ``auto``, ``cuda``, ``cuda:1`` or ``cpu`` (in process).
        quantization: ``4bit`` or ``8bit`` for 8-16 GB GPUs (in process).
        vlm_deadline_s: Every model call stops here and returns what it has.
        vlm_long_side: Frames are resized to this longer side for the model.
        vlm_max_new_tokens: Cap on each answer's length.
        change_detection: Only frames the change detector fires on go to the
            model (default). Off, every frame is offered (newest wins): for
            diagnosis and benchmarks.
        speech_in: Load faster-whisper for spoken questions.
        speech_out: Load pyttsx3/espeak-ng for spoken answers.
        asr_model: faster-whisper model name or path (``tiny.en``, ``base.en``,
            ``small`` for Mandarin...).
        asr_device: ``auto``, ``cpu`` or ``cuda``.
        describe_port: Port of ``POST /v1/describe`` (one-shot describe over
            HTTP, ``server/describe.py``); ``None`` turns it off.
        text_reading: Load the OCR text reader (signs and "read this").
        hosts: Extra names this server answers to (``Host`` of browser
            websocket upgrades); IP addresses, ``localhost`` and this machine's
            name are always allowed.
        max_frame_pixels: Frames with more pixels are refused before decoding.
        account_frame_rate: Camera frames one account may have decoded a second,
            all its sessions together, counted in 640x480 frames by decode cost
            (pixels or bytes, 100 KB a frame, whichever is more, times 4 or more for
            a progressive JPEG, at least 1: ``server.ratelimit.frame_cost``; a 4 MP
            progressive frame counts as 52, a 1 MB one as 10). A phone sends 5-15
            640x480 frames a second; without this one account's three sessions of
            4 MP progressive frames doubled everybody else's time to a warning
            (``benchmarks/load.py --extras heavy``). Frames past it are dropped
            (the newest wins anyway) and the client is told ``rate-limited``.
        send_timeout_s: A client that does not take a message within this long
            is closed (it stopped reading).
        max_sessions_per_account: Live sessions one token may hold.
        max_sessions_per_address: Live sessions from one source address.
        trusted_proxies: Addresses of reverse proxies in front of this server:
            from them the client's address is taken from ``X-Forwarded-For`` (for
            the per-address login and session limits). Empty: the peer's address.
        speech_stall_s: No audio from the synthesiser for this long fails that
            utterance (``speech-stop`` ``failed``); the session's speech goes on.
    """

    host: str = "0.0.0.0"
    port: int = 8765
    db_path: Path = field(default_factory=lambda: default_data_dir() / "seealoud.db")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    origins: list[str] = field(default_factory=list)
    max_frame_bytes: int = 1_000_000
    max_message_bytes: int = 4_000_000
    max_text_bytes: int = 65_536
    max_audio_ms: int = 30_000
    audio_rate: int = 16_000
    frame_age_budget_ms: int = 1_500
    hello_timeout_s: float = 10.0
    log_level: str = "INFO"
    vision_backend: str = "transformers"
    model: str | None = None
    vlm_url: str | None = None
    device: str = "auto"
    quantization: str | None = None
    vlm_deadline_s: float = 2.0
    vlm_long_side: int = 448
    vlm_max_new_tokens: int = 160
    change_detection: bool = True
    speech_in: bool = True
    speech_out: bool = True
    asr_model: str = "tiny.en"
    asr_device: str = "auto"
    text_reading: bool = True
    describe_port: int | None = None
    hosts: list[str] = field(default_factory=list)
    max_frame_pixels: int = 4_000_000
    account_frame_rate: float = 48.0
    send_timeout_s: float = 10.0
    max_sessions_per_account: int = 3
    max_sessions_per_address: int = 20
    speech_stall_s: float = 5.0
    trusted_proxies: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")
        if not 0 < self.max_frame_bytes <= self.max_message_bytes:
            raise ConfigError("need 0 < max_frame_bytes <= max_message_bytes")
        if self.vision_backend not in ("transformers", "openai", "none"):
            raise ConfigError(
                f"vision_backend {self.vision_backend!r}: choose transformers, openai or none"
            )
        if self.vision_backend == "openai" and not self.vlm_url:
            raise ConfigError("vision_backend 'openai' needs vlm_url, e.g. http://gpu:8000/v1")
        if not self.account_frame_rate > 0:
            raise ConfigError("account_frame_rate must be positive (640x480 frames a second)")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> ServerConfig:
        """Read ``[server]`` from a TOML file, then apply non-None overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            try:
                doc = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config {path}: {exc}") from exc
            values.update(doc.get("server", {}))
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        for key in ("db_path", "tls_cert", "tls_key"):
            if isinstance(values.get(key), str):
                values[key] = Path(values[key]).expanduser()
        return cls(**values)
