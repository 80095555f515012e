"""The OpenAI-compatible backend against a real server on loopback: `transformers serve`
running the same tiny Qwen3-VL checkpoint (vLLM and SGLang speak the same API on a GPU)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from vision.errors import BackendError
from vision.prompts import build_prompt
from vision.vlm import GenerationOptions, HttpOptions, OpenAIBackend

pytest.importorskip("httpx", reason="the http extra is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tiny_vlm: Path) -> Iterator[str]:
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("`transformers serve` is not installed (pip install 'transformers[serving]')")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [exe, "serve", str(tiny_vlm), "--port", str(port), "--device", "cpu"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("transformers serve did not start in 120 s")
                time.sleep(0.25)  # polling a starting process; bounded by the deadline
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def _image() -> Image.Image:
    return Image.new("RGB", (640, 480), (30, 140, 90))


async def test_streams_text_from_the_engine(served: str, tiny_vlm: Path) -> None:
    backend = OpenAIBackend(HttpOptions(base_url=served, model=str(tiny_vlm)))
    chunks: list[str] = []
    try:
        gen = await backend.generate(
            _image(),
            build_prompt(question="is the door open?"),
            options=GenerationOptions(max_new_tokens=8, deadline_s=30),
            cancel=threading.Event(),
            on_text=chunks.append,
        )
    finally:
        await backend.close()
    assert gen.text and "".join(chunks) == gen.text and len(chunks) >= 2
    assert gen.stop in ("eos", "max-tokens") and gen.prefill_ms > 0


async def test_deadline_returns_what_it_has(served: str, tiny_vlm: Path) -> None:
    backend = OpenAIBackend(HttpOptions(base_url=served, model=str(tiny_vlm)))
    started = time.monotonic()
    try:
        gen = await backend.generate(
            _image(),
            build_prompt(),
            options=GenerationOptions(max_new_tokens=4000, deadline_s=1.5),
            cancel=threading.Event(),
        )
    finally:
        await backend.close()
    assert gen.stop == "deadline" and gen.partial and gen.text
    assert time.monotonic() - started < 5


async def test_engine_errors_are_reported(served: str) -> None:
    backend = OpenAIBackend(HttpOptions(base_url=served, model="someone/else"))
    try:
        with pytest.raises(BackendError, match="400"):
            await backend.generate(
                _image(), build_prompt(), options=GenerationOptions(), cancel=threading.Event()
            )
    finally:
        await backend.close()


async def test_unreachable_engine_retries_then_fails_clearly() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    backend = OpenAIBackend(HttpOptions(base_url=url, retries=2, backoff_s=0.01))
    try:
        with pytest.raises(BackendError, match="cannot reach the model server"):
            await backend.generate(
                _image(), build_prompt(), options=GenerationOptions(), cancel=threading.Event()
            )
    finally:
        await backend.close()


def test_api_key_is_never_shown() -> None:
    assert "s3cret" not in repr(HttpOptions(api_key="s3cret"))
