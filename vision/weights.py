"""Getting a model's weights onto the machine: fast failure offline, progress online.

Without this, a server with no weights and no network spends minutes in the
hub client's retries (each warning printed twice) before saying what to do.
Here the hub is probed once (``HF_HUB_OFFLINE``, then one TCP connect with a
2 s budget, through the proxy if one is set); when it cannot be reached the
caller gets one ``ModelUnavailable`` naming the fixes. When it can, the
download reports bytes done and total in a ``LoadProgress`` (for ``/readyz``)
and logs a line every 10%.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vision.errors import ModelUnavailable

log = logging.getLogger("seealoud.vlm")

HUB_PROBE_TIMEOUT_S = 2.0


@dataclass(kw_only=True)
class LoadProgress:
    """Where a model load stands; written by the loader thread, read by the server.

    Attributes:
        stage: ``waiting`` (the loader has not started), ``checking-weights``
            (looking on disk, probing the hub), ``importing`` (torch and
            transformers: seconds), ``choosing``, ``downloading``, ``loading``,
            ``ready`` or ``failed``.
        model: The model being loaded, once chosen.
        done_bytes: Bytes downloaded so far (downloading only).
        total_bytes: Bytes to download, when known.
    """

    stage: str = "waiting"
    model: str = ""
    done_bytes: int = 0
    total_bytes: int | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total_bytes:
            return None
        return min(1.0, self.done_bytes / self.total_bytes)

    def to_dict(self) -> dict[str, Any]:
        """For ``/readyz``: plain JSON values (a local model by its folder only)."""
        out: dict[str, Any] = {"stage": self.stage, "model": shown_model(self.model)}
        if self.stage == "downloading":
            out["done_bytes"] = self.done_bytes
            out["total_bytes"] = self.total_bytes
            fraction = self.fraction
            out["percent"] = None if fraction is None else round(fraction * 100, 1)
        return out


def shown_model(model: str) -> str:
    """A model as the unauthenticated ``/metrics`` may show it: a hub id as it is, a local
    path by its last part only (an attacker pass read a user's directory there)."""
    if model.startswith(("/", ".", "~")) or (os.sep in model and os.path.exists(model)):
        return os.path.basename(model.rstrip("/" + os.sep)) or "local"
    return model


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_unreachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the model hub cannot be reached, or None when a connection opened.

    One TCP connect (to the proxy when ``HTTPS_PROXY`` is set), DNS included, on a
    helper thread so a resolver that hangs cannot stretch the budget.
    """
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlsplit(proxy or endpoint)
    host = target.hostname or "huggingface.co"
    port = target.port or (443 if target.scheme == "https" else 80)
    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(None)
        except OSError as exc:
            result.append(f"{host}:{port} cannot be reached ({exc.strerror or exc})")

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.2)
    if not result:
        return f"{host}:{port} did not answer within {timeout_s:.0f} s"
    return result[0]


SMALLEST_MODEL = "Qwen/Qwen3-VL-2B-Instruct"


def missing_weights_message(
    model: str,
    why: str,
    models_dir: Path | None,
    *,
    device: str = "cuda",
    quantization: str | None = None,
) -> str:
    """The one line an operator needs: what is missing, and every way to fix it.

    The closing advice fits the case: on a GPU, a smaller model or 4-bit loading
    (each only when it is not already what was asked); on the CPU, the 2B model
    or a GPU engine elsewhere, never advice about GPU memory.
    """
    name = model.split("/")[-1]
    target = (models_dir / name) if models_dir is not None else Path("models") / name
    size = " (about 17 GB)" if "8B" in model else ""
    smallest = model == SMALLEST_MODEL or model.endswith("/" + SMALLEST_MODEL.split("/")[-1])
    advice: list[str] = []
    if device.startswith("cuda"):
        if not smallest:
            advice.append(f"a smaller model (--model {SMALLEST_MODEL})")
        if quantization is None and "8B" in model:
            advice.append("--quantization 4bit")
        tail = f"; {' or '.join(advice)} needs less GPU memory" if advice else ""
    else:
        if not smallest:
            advice.append(f"on the CPU use the smallest model, --model {SMALLEST_MODEL}")
        advice.append("use a GPU engine on another machine (--vision openai --vlm-url URL)")
        tail = "; or " + "; or ".join(advice)
    return (
        f"the weights of {model} are not on this machine and the hub is unreachable ({why}). "
        f"Fix: download them where there is network, `hf download {model} --local-dir "
        f"{target}`{size}, and copy the folder here (found there automatically), or start "
        f"with `seealoud serve --model PATH`{tail}"
    )


def no_model_message(why: str, models_dir: Path | None) -> str:
    """No model given, no Qwen3-VL on disk, no hub: the options for either kind of machine."""
    target = models_dir if models_dir is not None else Path("models")
    return (
        f"no Qwen3-VL is on this machine and the hub is unreachable ({why}). Fix: download "
        "one where there is network and copy its folder here (found there automatically): "
        f"`hf download Qwen/Qwen3-VL-8B-Instruct --local-dir {target / 'Qwen3-VL-8B-Instruct'}` "
        "(about 17 GB, for a GPU with 20 GiB free, or 8 GiB with --quantization 4bit) or "
        f"`hf download {SMALLEST_MODEL} --local-dir {target / SMALLEST_MODEL.split('/')[-1]}` "
        "(small GPUs and the CPU); or start with `seealoud serve --model PATH`, or use a GPU "
        "engine on another machine (--vision openai --vlm-url URL)"
    )


def fetch(
    model: str,
    progress: LoadProgress,
    *,
    models_dir: Path | None,
    device: str = "cuda",
    quantization: str | None = None,
    hub: Callable[[], str | None] = hub_unreachable,
    snapshot: Callable[..., str] | None = None,
) -> Path:
    """Download a hub model into the Hugging Face cache with progress; its folder.

    Raises ``ModelUnavailable`` with the fix when the hub cannot be reached (``hub``
    says why) or the download fails. ``snapshot`` replaces
    ``huggingface_hub.snapshot_download`` (tests drive the progress bar with a
    double: there is no hub here); the file sizes are then left to its bars.
    """
    why = hub()
    if why is not None:
        raise ModelUnavailable(
            missing_weights_message(
                model, why, models_dir, device=device, quantization=quantization
            )
        )
    try:
        from huggingface_hub import HfApi
        from huggingface_hub import snapshot_download as hub_snapshot
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ModelUnavailable(
            f"downloading needs huggingface_hub ({exc.name} is missing): "
            "pip install 'seealoud[vlm]'"
        ) from exc
    progress.stage, progress.model = "downloading", model
    if snapshot is None:
        try:
            info = HfApi().model_info(model, files_metadata=True)
            progress.total_bytes = sum(s.size or 0 for s in info.siblings or []) or None
        except Exception as exc:  # the size is a nicety; the download itself says what failed
            log.debug("no file sizes for %s: %s", model, type(exc).__name__)
    reporter = _Reporter(progress)

    class ProgressBar(tqdm):
        """No terminal bar: the bytes go to ``progress`` and a log line every 10%.

        huggingface_hub (2.x) opens two byte bars per snapshot: network transfer
        (compressed with hf_xet) and "Reconstructing" (bytes written to disk, the
        ones the file sizes add up to); only the second is counted, or the total
        would be passed twice. Its ``name`` (``huggingface_hub.snapshot_download``)
        or its description identifies it: both are the hub's internals, so
        ``tests/test_model_choice.py`` drives this bar with a double that opens
        bars as the installed hub does, and checks the installed hub's source
        still names its bar so (an upgrade that renames it fails there).
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            name = kwargs.pop("name", None)
            super().__init__(*args, **kwargs)
            self._bytes = kwargs.get("unit") == "B" and (
                name == "huggingface_hub.snapshot_download"
                or "Reconstruct" in str(kwargs.get("desc"))
            )

        def update(self, n: float | None = 1) -> bool | None:
            if self._bytes and n:
                reporter.add(int(n), self.total)
            return super().update(n)

    started = time.monotonic()
    download = snapshot if snapshot is not None else hub_snapshot
    try:
        folder = Path(download(model, tqdm_class=ProgressBar))
    except Exception as exc:  # network, disk full, gated repo: one readable line
        raise ModelUnavailable(
            f"downloading {model} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from exc
    log.info(
        "downloaded %s (%.1f GB) in %.0f s",
        model,
        progress.done_bytes / 1e9,
        time.monotonic() - started,
    )
    return folder


class _Reporter:
    """Adds bytes to the progress and logs at each new tenth."""

    def __init__(self, progress: LoadProgress) -> None:
        self.progress = progress
        self.logged_tenths = 0
        self._lock = threading.Lock()

    def add(self, n: int, bar_total: float | None) -> None:
        with self._lock:
            p = self.progress
            p.done_bytes += n
            if bar_total and (p.total_bytes is None or bar_total > p.total_bytes):
                p.total_bytes = int(bar_total)
            fraction = p.fraction
            if fraction is None:
                return
            tenths = int(fraction * 10)
            if tenths > self.logged_tenths:
                self.logged_tenths = tenths
                log.info(
                    "downloading %s: %d%% (%.1f of %.1f GB)",
                    p.model,
                    tenths * 10,
                    p.done_bytes / 1e9,
                    (p.total_bytes or 0) / 1e9,
                )
