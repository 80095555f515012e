"""The model fits the machine: choice rules on a faked device inventory, and the real
loader picking the tiny checkpoint from a models folder as a small Qwen3-VL."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from vision.choice import GIB, DeviceInventory, GpuInfo, choose_model, local_weights
from vision.engine import VisionEngine
from vision.errors import ModelUnavailable
from vision.vlm import TransformersBackend, TransformersOptions

EIGHT_B, FOUR_B, TWO_B = (
    "Qwen/Qwen3-VL-8B-Instruct",
    "Qwen/Qwen3-VL-4B-Instruct",
    "Qwen/Qwen3-VL-2B-Instruct",
)


def gpu(free_gib: float, total_gib: float | None = None, name: str = "Fake GPU") -> GpuInfo:
    """A faked CUDA device (test double for what torch reports)."""
    total = total_gib if total_gib is not None else free_gib
    return GpuInfo(index=0, name=name, total_bytes=int(total * GIB), free_bytes=int(free_gib * GIB))


def fake_checkpoint(folder: Path, shards: int = 1, *, missing: int = 0) -> Path:
    """A checkpoint's file layout (config and weight files named in an index); contents
    are not read by the choice rules, only whether the download is complete."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    index = {"weight_map": {f"layer{i}": n for i, n in enumerate(names)}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    for n in names[missing:]:
        (folder / n).write_bytes(b"")
    return folder


def test_big_gpu_gets_8b_in_bf16(tmp_path: Path) -> None:
    choice = choose_model(
        inventory=DeviceInventory(gpus=[gpu(75, 80, "H100")]), models_dir=tmp_path
    )
    assert (choice.model, choice.device, choice.dtype, choice.quantization) == (
        EIGHT_B,
        "cuda",
        "bfloat16",
        None,
    )
    assert "H100 with 75.0 GiB free of 80.0 GiB" in choice.reason
    assert choice.local_path is None  # not on disk: the loader downloads or says how


def test_laptop_gpu_gets_4bit_when_bitsandbytes_is_there(tmp_path: Path) -> None:
    inv = DeviceInventory(gpus=[gpu(11.5, 12)], bitsandbytes=True)
    choice = choose_model(inventory=inv, models_dir=tmp_path)
    assert (choice.model, choice.quantization) == (EIGHT_B, "4bit")


def test_laptop_gpu_without_bitsandbytes_gets_a_smaller_model(tmp_path: Path) -> None:
    inv = DeviceInventory(gpus=[gpu(11.5, 12)])
    choice = choose_model(inventory=inv, models_dir=tmp_path)
    assert (choice.model, choice.quantization, choice.device) == (FOUR_B, None, "cuda")
    assert "bitsandbytes" in choice.reason
    # A smaller model already on disk is preferred over one that must be downloaded.
    inv = DeviceInventory(gpus=[gpu(7)])
    fake_checkpoint(tmp_path / "Qwen3-VL-2B-Instruct")
    choice = choose_model(inventory=inv, models_dir=tmp_path)
    assert choice.model == TWO_B and choice.local_path == tmp_path / "Qwen3-VL-2B-Instruct"


def test_no_gpu_never_runs_8b_on_the_cpu(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as info:
        choose_model(inventory=DeviceInventory(note="no CUDA GPU found"), models_dir=tmp_path)
    message = str(info.value)
    assert "not run on the CPU" in message
    assert f"hf download {TWO_B} --local-dir {tmp_path / 'Qwen3-VL-2B-Instruct'}" in message
    assert "--model PATH" in message and "--vlm-url" in message
    # The smallest one on disk is used, even when a larger one is there too.
    fake_checkpoint(tmp_path / "Qwen3-VL-4B-Instruct")
    fake_checkpoint(tmp_path / "Qwen3-VL-2B-Instruct")
    choice = choose_model(inventory=DeviceInventory(), models_dir=tmp_path)
    assert (choice.model, choice.device, choice.dtype) == (TWO_B, "cpu", "float32")


def test_a_tiny_gpu_is_treated_like_none(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path / "Qwen3-VL-2B-Instruct")
    choice = choose_model(inventory=DeviceInventory(gpus=[gpu(3, 4)]), models_dir=tmp_path)
    assert choice.device == "cpu" and choice.model == TWO_B and "too small" in choice.reason


def test_explicit_model_device_and_quantization_win(tmp_path: Path) -> None:
    big = DeviceInventory(gpus=[gpu(75)])
    choice = choose_model(model=TWO_B, inventory=big, models_dir=tmp_path)
    assert (choice.model, choice.device) == (TWO_B, "cuda") and "as configured" in choice.reason
    # --device cpu on a GPU machine: the CPU rules, not 8B on the CPU.
    fake_checkpoint(tmp_path / "Qwen3-VL-2B-Instruct")
    choice = choose_model(device="cpu", inventory=big, models_dir=tmp_path)
    assert (choice.model, choice.device) == (TWO_B, "cpu")
    # An explicit 8B on the CPU is the operator's call.
    choice = choose_model(model=EIGHT_B, device="cpu", inventory=big, models_dir=tmp_path)
    assert (choice.model, choice.device, choice.dtype) == (EIGHT_B, "cpu", "float32")
    choice = choose_model(quantization="8bit", inventory=big, models_dir=tmp_path)
    assert (choice.model, choice.quantization) == (EIGHT_B, "8bit")
    with pytest.raises(ModelUnavailable, match="no such folder"):
        choose_model(model="./models/typo", inventory=big, models_dir=tmp_path)
    with pytest.raises(ModelUnavailable, match="cuda:1"):
        choose_model(device="cuda:1", inventory=big, models_dir=tmp_path)


def test_an_interrupted_download_is_not_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_checkpoint(tmp_path / "Qwen3-VL-2B-Instruct", shards=3, missing=1)
    assert local_weights(TWO_B, tmp_path) is None
    # The Hugging Face cache layout is found too (refs/main -> snapshots/<sha>).
    cache = tmp_path / "hub"
    repo = cache / "models--Qwen--Qwen3-VL-2B-Instruct"
    fake_checkpoint(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    assert local_weights(TWO_B, tmp_path / "empty") == repo / "snapshots" / "abc123"


async def test_the_loader_picks_a_small_model_on_disk_without_a_gpu(
    tiny_vlm: Path, tmp_path: Path
) -> None:
    """The real loader, no model given, no GPU (faked inventory): the tiny checkpoint
    placed where a downloaded Qwen3-VL-2B would be is chosen and loaded."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "Qwen3-VL-2B-Instruct").symlink_to(tiny_vlm, target_is_directory=True)
    backend = TransformersBackend(
        TransformersOptions(models_dir=models, warmup=False), inventory=DeviceInventory
    )
    engine = VisionEngine(backend)
    await engine.load()
    assert engine.ready, engine.failure
    assert backend.choice is not None and backend.choice.model == TWO_B
    assert backend.name == f"transformers:{TWO_B}"
    assert engine.progress.to_dict() == {"stage": "ready", "model": TWO_B}
    await backend.close()


async def test_offline_without_weights_fails_fast_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No weights, no hub: vision is unavailable in seconds, one ERROR line naming the fix
    (the real figure is measured in the report; the bound here is loose on purpose)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    big = DeviceInventory(gpus=[gpu(75, 80, "H100")])
    backend = TransformersBackend(
        TransformersOptions(models_dir=tmp_path / "models"), inventory=lambda: big
    )
    engine = VisionEngine(backend)
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        await engine.load()
    elapsed = time.monotonic() - started
    assert engine.status == "failed" and elapsed < 15
    assert engine.progress.stage == "failed"
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    line = errors[0].getMessage()
    assert f"hf download {EIGHT_B} --local-dir {tmp_path / 'models' / 'Qwen3-VL-8B-Instruct'}" in (
        line
    )
    assert "HF_HUB_OFFLINE" in line and "--model PATH" in line and "4bit" in line


def test_unreachable_hub_is_found_by_one_quick_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE, one TCP connect decides (here to a closed loopback port)."""
    import socket

    from vision.weights import hub_unreachable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    why = hub_unreachable()
    assert why is not None and f"127.0.0.1:{closed_port} cannot be reached" in why
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        assert hub_unreachable() is None


def test_hub_log_lines_are_printed_once() -> None:
    """huggingface_hub's own stderr handler plus propagation printed each warning twice."""
    from vision.vlm import route_library_logs

    route_library_logs()
    hub = logging.getLogger("huggingface_hub")
    assert not [h for h in hub.handlers if type(h) is logging.StreamHandler]
    assert hub.propagate


async def test_serve_offline_reports_vision_unavailable_once_and_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`seealoud serve` as a process, no weights, hub offline: /readyz says why within
    seconds, and the log has exactly one line about it (plus the models summary)."""
    import asyncio

    from tests.server_process import ServeProcess

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    started = time.monotonic()
    server = ServeProcess(
        tmp_path / "s.db", "--model", EIGHT_B, "--device", "cpu", log=tmp_path / "server.log"
    )

    def vision_failed() -> bool:
        return "are not on this machine" in json.dumps(server.get_json("/readyz"))

    try:
        await asyncio.to_thread(server.wait_until, vision_failed, timeout=15, what="failed fast")
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    log = server.log.read_text()
    assert elapsed < 15, log
    assert log.count("vision unavailable:") == 1, log
    assert log.count("Retrying") == 0 and log.count(f"hf download {EIGHT_B}") == 1, log
