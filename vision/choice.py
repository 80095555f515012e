"""Which vision-language model this machine can run, and why.

With no model given, the server picks by what it finds: a CUDA GPU with room
for Qwen3-VL-8B in bf16 gets it; a smaller GPU gets the 8B model in 4-bit
(when bitsandbytes is installed) or a smaller Qwen3-VL; a machine without a GPU
never tries the 8B model on the CPU (32 GB of float32, minutes per frame): it
uses the smallest Qwen3-VL already on disk, or vision is unavailable with the
options spelled out. An explicit model, device or quantization always wins.

When the preferred model is not on disk and the hub cannot be reached, the
largest Qwen3-VL that is on disk and fits is taken instead (a working smaller
model beats a download that cannot happen).

Memory: the choice is made on the GPU's *free* memory, because loading into
memory another process holds fails with out-of-memory halfway through a 17 GB
read. Total memory is still looked at: when a larger model would fit in the
total but not in what is free now, the reason says so (close the other
program and restart to get it), rather than silently settling for less.

The device inventory is read lazily through torch (absent torch means no GPU)
and can be passed in, so the rules are tested with a faked inventory; so can
the hub probe (``vision.weights.hub_unreachable``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vision.errors import ModelUnavailable
from vision.weights import hub_unreachable

HubProbe = Callable[[], str | None]

GIB = 1024**3


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One Qwen3-VL size and the GPU memory it needs to run (weights plus activations)."""

    model: str
    bf16_bytes: int
    nf4_bytes: int

    @property
    def folder(self) -> str:
        return self.model.split("/")[-1]


# Largest first. Needs measured as weights + ~15% for the vision tower's activations
# and the KV cache of one 448-pixel frame and a 160-token answer.
QWEN3_VL = (
    Candidate(model="Qwen/Qwen3-VL-8B-Instruct", bf16_bytes=20 * GIB, nf4_bytes=8 * GIB),
    Candidate(model="Qwen/Qwen3-VL-4B-Instruct", bf16_bytes=11 * GIB, nf4_bytes=5 * GIB),
    Candidate(model="Qwen/Qwen3-VL-2B-Instruct", bf16_bytes=6 * GIB, nf4_bytes=3 * GIB),
)
LARGEST, SMALLEST = QWEN3_VL[0], QWEN3_VL[-1]


def default_models_dir() -> Path:
    """Where downloaded models are looked for: ``$SEEALOUD_MODELS``, else next to the
    server's data (``$XDG_DATA_HOME/seealoud/models``, default ``~/.local/share``)."""
    if os.environ.get("SEEALOUD_MODELS"):
        return Path(os.environ["SEEALOUD_MODELS"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "seealoud" / "models"


@dataclass(frozen=True, kw_only=True)
class GpuInfo:
    """One CUDA device as torch sees it."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int


@dataclass(kw_only=True)
class DeviceInventory:
    """What the machine offers a model: CUDA GPUs and whether 4-bit loading is possible.

    Attributes:
        gpus: CUDA devices, in torch's order.
        bitsandbytes: Whether ``bitsandbytes`` imports (4-bit/8-bit loading).
        note: Why no GPU was found, when that is worth saying (torch missing...).
    """

    gpus: list[GpuInfo] = field(default_factory=list)
    bitsandbytes: bool = False
    note: str = ""

    @classmethod
    def detect(cls) -> DeviceInventory:
        """Ask torch (imported here, lazily); a machine without torch has no GPU for us."""
        try:
            import torch
        except ImportError:
            return cls(note="torch is not installed")
        gpus: list[GpuInfo] = []
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(index)
                name = torch.cuda.get_device_name(index)
                gpus.append(GpuInfo(index=index, name=name, total_bytes=total, free_bytes=free))
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            has_bnb = False
        else:
            has_bnb = True
        return cls(gpus=gpus, bitsandbytes=has_bnb, note="" if gpus else "no CUDA GPU found")

    def gpu(self, device: str) -> GpuInfo | None:
        """The GPU a device string names (``cuda`` = the first), or None."""
        if not device.startswith("cuda") or not self.gpus:
            return None
        _, _, index = device.partition(":")
        wanted = int(index) if index.isdigit() else 0
        return next((g for g in self.gpus if g.index == wanted), None)


@dataclass(frozen=True, kw_only=True)
class ModelChoice:
    """The model to load and why.

    Attributes:
        model: Hub id or local path, as given to ``from_pretrained``.
        device: ``cuda``, ``cuda:N`` or ``cpu``.
        dtype: ``bfloat16``, ``float16`` or ``float32``.
        quantization: ``None``, ``4bit`` or ``8bit``.
        reason: One sentence for the operator's log: what was found, what was picked.
        local_path: Where the weights already are on disk, or None (to download).
    """

    model: str
    device: str
    dtype: str
    quantization: str | None
    reason: str
    local_path: Path | None = None


def choose_model(
    *,
    model: str | None = None,
    device: str = "auto",
    quantization: str | None = None,
    inventory: DeviceInventory | None = None,
    models_dir: Path | None = None,
    hub: HubProbe = hub_unreachable,
) -> ModelChoice:
    """Pick the model for this machine; see the module docstring.

    ``hub`` says why the model hub cannot be reached (None: it can); it is asked
    only when the preferred model is not on disk. Raises ``ModelUnavailable``
    (naming the options) when nothing suitable can run.
    """
    inv = inventory if inventory is not None else DeviceInventory.detect()
    folder = models_dir if models_dir is not None else default_models_dir()
    if device == "auto":
        device = "cuda" if inv.gpus else "cpu"
    gpu = inv.gpu(device)
    if device.startswith("cuda") and gpu is None:
        raise ModelUnavailable(
            f"--device {device} was asked for but {inv.note or 'there is no such CUDA GPU'}; "
            "use --device cpu with a small model, or the OpenAI-compatible backend (--vlm-url)"
        )
    dtype = "bfloat16" if gpu is not None else "float32"
    if model is not None:
        path = Path(model).expanduser()
        if path.exists():
            local: Path | None = path  # loading says what is wrong with it, if anything
        elif model.startswith((".", "/", "~")) or model.count("/") != 1:
            raise ModelUnavailable(f"--model {model}: no such folder, and not a hub id")
        else:
            local = local_weights(model, folder)
        where = f" ({gpu.name})" if gpu else ""
        return ModelChoice(
            model=model,
            device=device,
            dtype=dtype,
            quantization=quantization,
            reason=f"{model} on {device}{where}{_q(quantization)}, as configured",
            local_path=local,
        )
    if gpu is not None:
        choice = _for_gpu(gpu, device, quantization, inv, folder)
        if choice.local_path is None and quantization is None:
            return _on_disk_instead(choice, gpu, inv, folder, hub)
        return choice
    return _for_cpu(inv, folder, quantization)


def _options(gpu: GpuInfo, inv: DeviceInventory, free: int) -> list[tuple[Candidate, str | None]]:
    """Every (model, quantization) that fits in ``free`` bytes of ``gpu``, best first."""
    out: list[tuple[Candidate, str | None]] = []
    for c in QWEN3_VL:
        if free >= c.bf16_bytes:
            out.append((c, None))
        elif c is LARGEST and inv.bitsandbytes and free >= c.nf4_bytes:
            out.append((c, "4bit"))
    return out


def _for_gpu(
    gpu: GpuInfo, device: str, quantization: str | None, inv: DeviceInventory, folder: Path
) -> ModelChoice:
    free, total = gpu.free_bytes, gpu.total_bytes
    seen = f"{gpu.name} with {free / GIB:.1f} GiB free of {total / GIB:.1f} GiB"

    def pick(c: Candidate, q: str | None, why: str) -> ModelChoice:
        best_in_total = next(iter(_options(gpu, inv, total)), None)
        if best_in_total is not None and best_in_total != (c, q):
            better, bq = best_in_total
            why += (
                f"; {better.model}{_q(bq)} would fit in the {total / GIB:.0f} GiB this GPU has, "
                "but other programs hold the rest: free it and restart to get that one"
            )
        return ModelChoice(
            model=c.model,
            device=device,
            dtype="bfloat16",
            quantization=q,
            reason=f"{seen}: {c.model}{_q(q)} ({why})",
            local_path=local_weights(c.model, folder),
        )

    if quantization is not None:
        return pick(LARGEST, quantization, "quantization as configured")
    if free >= LARGEST.bf16_bytes:
        return pick(LARGEST, None, f"it needs about {LARGEST.bf16_bytes // GIB} GiB")
    if inv.bitsandbytes and free >= LARGEST.nf4_bytes:
        return pick(LARGEST, "4bit", "too little memory for bf16, so 4-bit")
    fitting = [c for c in QWEN3_VL[1:] if free >= c.bf16_bytes]
    present = [c for c in fitting if local_weights(c.model, folder) is not None]
    if present:
        return pick(present[0], None, "the largest smaller Qwen3-VL on disk that fits")
    if fitting:
        hint = "" if inv.bitsandbytes else "; pip install bitsandbytes for the 8B model in 4-bit"
        return pick(fitting[0], None, f"the largest smaller Qwen3-VL that fits{hint}")
    return _for_cpu(inv, folder, None, why=f"{seen} is too small for any Qwen3-VL")


def _on_disk_instead(
    preferred: ModelChoice, gpu: GpuInfo, inv: DeviceInventory, folder: Path, hub: HubProbe
) -> ModelChoice:
    """``preferred`` is not on disk: keep it if the hub can be reached (it downloads),
    else take the largest Qwen3-VL on disk that fits (else keep it: loading names the fix)."""
    for c, q in _options(gpu, inv, gpu.free_bytes):
        local = local_weights(c.model, folder)
        if local is None:
            continue
        why = hub()
        if why is None:
            return preferred
        return ModelChoice(
            model=c.model,
            device=preferred.device,
            dtype="bfloat16",
            quantization=q,
            reason=(
                f"{gpu.name} with {gpu.free_bytes / GIB:.1f} GiB free: {c.model}{_q(q)}, "
                f"the largest Qwen3-VL on disk that fits, because {preferred.model}"
                f"{_q(preferred.quantization)} is not on disk and the hub is unreachable "
                f"({why})"
            ),
            local_path=local,
        )
    return preferred


def _for_cpu(
    inv: DeviceInventory, folder: Path, quantization: str | None, *, why: str = ""
) -> ModelChoice:
    why = why or (inv.note or "no CUDA GPU found")
    if quantization is not None:
        raise ModelUnavailable(
            f"--quantization {quantization} needs a CUDA GPU and {why}; drop it to run a small "
            "model on the CPU"
        )
    for c in reversed(QWEN3_VL):  # smallest first: the CPU is slow enough already
        local = local_weights(c.model, folder)
        if local is not None:
            return ModelChoice(
                model=c.model,
                device="cpu",
                dtype="float32",
                quantization=None,
                reason=(
                    f"{why}: {c.model} on the CPU, the smallest Qwen3-VL on disk "
                    "(seconds per frame; a GPU makes it real-time)"
                ),
                local_path=local,
            )
    raise ModelUnavailable(
        f"{why}, and the 8B model is not run on the CPU (32 GB of memory, minutes per frame). "
        f"Options: a CUDA GPU; a small model on disk (`hf download {SMALLEST.model} --local-dir "
        f"{folder / SMALLEST.folder}` where there is network, found here automatically), or "
        "`seealoud serve --model PATH`; or an OpenAI-compatible engine on another machine "
        "(`--vision openai --vlm-url http://gpu:8000/v1`)"
    )


def _q(quantization: str | None) -> str:
    return f" in {quantization}" if quantization else ""


def local_weights(model: str, models_dir: Path | None = None) -> Path | None:
    """The folder holding a complete checkpoint of ``model``, or None.

    Looks at ``model`` as a path, then ``models_dir/<name>``, then the Hugging Face
    cache. Complete means a config and every weight file its index lists, so an
    interrupted download is not taken for a model.
    """
    direct = Path(model).expanduser()
    if direct.is_dir():
        return direct if _complete(direct) else None
    if models_dir is not None:
        candidate = models_dir / model.split("/")[-1]
        if _complete(candidate):
            return candidate
    if model.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        snapshot = Path(snapshot_download(model, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return snapshot if _complete(snapshot) else None


def _complete(folder: Path) -> bool:
    if not (folder / "config.json").is_file():
        return False
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return all((folder / shard).is_file() for shard in shards)
    return (folder / "model.safetensors").is_file() or (folder / "pytorch_model.bin").is_file()
