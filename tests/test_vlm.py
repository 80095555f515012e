"""The in-process backend with a real tiny Qwen3-VL checkpoint, through the real code path."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from runtime import Loader, WorkerStalled
from tests.conftest import jpeg_bytes
from vision.engine import VisionEngine, _decode
from vision.errors import BackendError, ModelUnavailable
from vision.observation import Hazard
from vision.prompts import Prompt, build_prompt
from vision.vlm import Generation, GenerationOptions, TransformersBackend, TransformersOptions
from vision.weights import LoadProgress

pytest.importorskip("torch", reason="the vlm extra is not installed")


async def load(engine: VisionEngine) -> Loader:
    """Load as the server does: a ``runtime.Loader`` running ``load_blocking``."""
    loader = Loader("vision", engine.load_blocking)
    await loader.load()
    return loader


@pytest.fixture(scope="module")
def backend(tiny_vlm: Path) -> TransformersBackend:
    b = TransformersBackend(TransformersOptions(model=str(tiny_vlm), device="cpu"))
    b.load()
    return b


async def test_frame_in_observation_out(backend: TransformersBackend) -> None:
    engine = VisionEngine(backend, options=GenerationOptions(max_new_tokens=12, deadline_s=30))
    await load(engine)
    assert engine.ready
    result = await engine.analyze(jpeg_bytes(640, 480), question="what is ahead?")
    gen = result.generation
    assert gen.image_tokens == 140  # 448x336 -> 28x21 patches -> merged 2x2, rounded
    assert 0 < gen.output_tokens <= 12 and gen.text == result.observation.raw
    assert gen.preprocess_ms > 0 and gen.prefill_ms > 0 and gen.stop in ("eos", "max-tokens")
    # Random weights say nothing useful; the parser must not turn that into a claim.
    obs = result.observation
    assert obs.parsed_as in ("text", "none", "json", "repaired-json")
    if obs.empty:
        assert obs.empty_reason in ("empty", "garbled")


async def test_text_streams_while_generating(backend: TransformersBackend) -> None:
    chunks: list[str] = []
    gen = await backend.generate(
        _image(),
        build_prompt(),
        options=GenerationOptions(max_new_tokens=10, min_new_tokens=10, deadline_s=30),
        cancel=threading.Event(),
        on_text=chunks.append,
    )
    assert gen.output_tokens == 10 and len(chunks) >= 2
    assert "".join(chunks) == gen.text


async def test_deadline_stops_generation_and_marks_partial(backend: TransformersBackend) -> None:
    gen = await backend.generate(
        _image(),
        build_prompt(),
        options=GenerationOptions(max_new_tokens=2000, min_new_tokens=2000, deadline_s=0.3),
        cancel=threading.Event(),
    )
    assert gen.stop == "deadline" and gen.partial
    assert 0 < gen.output_tokens < 2000


async def test_cancel_stops_generation(backend: TransformersBackend) -> None:
    cancel = threading.Event()
    gen = await backend.generate(
        _image(),
        build_prompt(),
        options=GenerationOptions(max_new_tokens=2000, min_new_tokens=2000, deadline_s=60),
        cancel=cancel,
        on_text=lambda _: cancel.set(),
    )
    assert gen.stop == "cancelled" and gen.partial and gen.output_tokens < 50


async def test_streamed_hazards_reach_the_callback_early() -> None:
    """The engine's streaming path with a scripted backend (test double): real timing is
    above; here the text is chosen so the hazard callback can be checked exactly."""
    double = ScriptedBackendDouble(
        [
            '{"hazards": [{"label": "chair", ',
            '"direction": "ahead"}',
            ', {"label": "step"}',
            '], "signs": [], "scene": "A room."}',
        ]
    )
    engine = VisionEngine(double)
    await load(engine)
    seen: list[tuple[Hazard, int]] = []
    result = await engine.analyze(jpeg_bytes(), on_hazard=lambda h: seen.append((h, double.sent)))
    assert [(h.label, n) for h, n in seen] == [("chair", 2), ("step", 3)]
    assert [h.label for h in result.observation.hazards] == ["chair", "step"]


def test_missing_weights_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    b = TransformersBackend(TransformersOptions(model="Qwen/Qwen3-VL-8B-Instruct", device="cpu"))
    with pytest.raises(ModelUnavailable) as info:
        b.load()
    message = str(info.value)
    assert "hf download Qwen/Qwen3-VL-8B-Instruct" in message and "--model" in message


async def test_engine_reports_unavailable_model_and_bad_frames(
    backend: TransformersBackend, tmp_path: Path
) -> None:
    broken = VisionEngine(TransformersBackend(TransformersOptions(model=str(tmp_path))))
    loader = await load(broken)
    assert loader.status == "failed" and loader.failure and not broken.ready
    with pytest.raises(ModelUnavailable):
        await broken.analyze(jpeg_bytes())
    engine = VisionEngine(backend)
    await load(engine)
    with pytest.raises(BackendError):
        await engine.analyze(b"\xff\xd8 not an image")


async def test_a_wedged_generation_is_abandoned_soon_after_its_deadline(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU kernel that never returns (a double: ``generate`` blocks on an event) costs
    its caller the deadline plus the grace, not a minute; the next call fails at its own
    deadline instead of queueing behind the stuck thread, and the model serves again
    once the stuck call ends."""
    import time

    release = threading.Event()
    real_generate = backend._model.generate

    def wedged_generate(**kwargs: object) -> object:  # test double for a hung kernel
        release.wait(30)
        return real_generate(**kwargs)

    monkeypatch.setattr(backend.options, "stall_after_deadline_s", 0.5)
    monkeypatch.setattr(backend._model, "generate", wedged_generate)
    opts = GenerationOptions(max_new_tokens=2, deadline_s=0.5)
    started = time.monotonic()
    with pytest.raises(WorkerStalled):
        await backend.generate(_image(), build_prompt(), options=opts, cancel=threading.Event())
    assert time.monotonic() - started < 3.0  # was stall_s=60 whatever the deadline
    started = time.monotonic()
    with pytest.raises(BackendError, match="stuck"):
        await backend.generate(_image(), build_prompt(), options=opts, cancel=threading.Event())
    assert time.monotonic() - started < 3.0
    monkeypatch.setattr(backend._model, "generate", real_generate)
    release.set()
    gen = await backend.generate(
        _image(),
        build_prompt(),
        options=GenerationOptions(max_new_tokens=2, deadline_s=30),
        cancel=threading.Event(),
    )
    assert gen.output_tokens > 0


def test_large_frames_are_decoded_at_reduced_size() -> None:
    """A 12-megapixel photo is decoded at 1/8 scale for a 448-pixel model input (libjpeg's
    draft mode), not at full size and then shrunk."""
    photo = jpeg_bytes(4000, 3000)
    image = _decode(photo, 448)
    assert image.size == (500, 375) and image.mode == "RGB"
    assert _decode(jpeg_bytes(640, 480), 448).size == (640, 480)  # 1/2 would be under 448


def _image() -> Image.Image:
    return Image.new("RGB", (640, 480), (120, 90, 60))


class ScriptedBackendDouble:
    """Test double: a backend that streams fixed text chunks (no model involved)."""

    name = "scripted-double"

    def __init__(self, chunks: list[str]) -> None:
        self.chunks = chunks
        self.sent = 0
        self.progress = LoadProgress(stage="ready", model="scripted-double")

    def load(self) -> None:
        pass

    async def generate(
        self,
        image: Image.Image,
        prompt: Prompt,
        *,
        options: GenerationOptions,
        cancel: threading.Event,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        for chunk in self.chunks:
            self.sent += 1
            if on_text is not None:
                on_text(chunk)
        return Generation(text="".join(self.chunks), output_tokens=len(self.chunks))

    async def close(self) -> None:
        pass


def test_metrics_name_a_local_model_by_its_folder_not_its_path(tmp_path: Path) -> None:
    """Found by an attacker pass: the unauthenticated ``/metrics`` labelled the backend
    ``transformers:/home/someone/models/...``; an engine URL can carry a password."""
    from vision.vlm import HttpOptions, OpenAIBackend

    local = tmp_path / "models" / "Qwen3-VL-2B-Instruct"
    local.mkdir(parents=True)
    backend = TransformersBackend(TransformersOptions(model=str(local)))
    assert backend.name == "transformers:Qwen3-VL-2B-Instruct"
    # and /readyz, on the same open port (a second attacker pass)
    from vision.weights import LoadProgress

    assert LoadProgress(model=str(local)).to_dict()["model"] == "Qwen3-VL-2B-Instruct"
    hub = TransformersBackend(TransformersOptions(model="Qwen/Qwen3-VL-2B-Instruct"))
    assert hub.name == "transformers:Qwen/Qwen3-VL-2B-Instruct"
    engine = OpenAIBackend(HttpOptions(base_url="http://ops:s3cret@gpu:8000/v1?key=abc"))
    assert engine.name == "openai:http://gpu:8000/v1"
