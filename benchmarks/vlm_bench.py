"""Latency of one vision-language model call, split into preprocess, prefill and decode.

    python benchmarks/vlm_bench.py                       # CPU here: the tiny random Qwen3-VL
    python benchmarks/vlm_bench.py --full-size --device cuda --new-tokens 64
                                                         # GPU: Qwen3-VL-8B shapes, bf16

On a GPU machine the real 8B weights may be unreachable; latency depends on
shapes, not weight values, so ``--full-size`` builds the 8B architecture
with random weights and forces the output length with ``min_new_tokens``.
Each resolution is run ``--repeat`` times after a warm-up; medians are shown.
Baseline in the same run: the same call at 224 px, the smallest setting.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from benchmarks.common import SHARED_DATA, machine, markdown_table, write_json
from tests.tiny_vlm import build_tiny_qwen3_vl
from vision.prompts import build_prompt
from vision.vlm import GenerationOptions, TransformersBackend, TransformersOptions

REFERENCE = {224: 320, 336: 450, 448: 680}  # A10G, transformers fp16, ms per frame (published)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint path (default: build one)")
    parser.add_argument("--full-size", action="store_true", help="Qwen3-VL-8B shapes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sides", default="224,336,448,640")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import torch

    model = args.model
    if model is None:
        model = str(
            build_tiny_qwen3_vl(Path(tempfile.mkdtemp()) / "qwen3-vl", full_size=args.full_size)
        )
    backend = TransformersBackend(TransformersOptions(model=model, device=args.device))
    backend.load()
    photo = SHARED_DATA / "images" / "leuvenA.jpg"
    image = (
        Image.open(photo).convert("RGB").resize((640, 480))
        if photo.exists()
        else (Image.new("RGB", (640, 480), (90, 110, 130)))
    )
    prompt = build_prompt()
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None
    print(f"machine: {machine()}" + (f", GPU {gpu}" if gpu else ""))
    print(
        f"model: {'Qwen3-VL-8B shapes, random weights' if args.full_size else 'tiny Qwen3-VL'}"
        f" ({model}), torch {torch.__version__}, {args.new_tokens} new tokens forced"
    )

    async def one(side: int) -> dict[str, float]:
        opts = GenerationOptions(
            long_side=side,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            deadline_s=600,
        )
        runs = []
        await backend.generate(image, prompt, options=opts, cancel=threading.Event())  # warm-up
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            gen = await backend.generate(image, prompt, options=opts, cancel=threading.Event())
            runs.append((gen, (time.perf_counter() - t0) * 1000))
        med = statistics.median
        return {
            "image_tokens": runs[0][0].image_tokens,
            "preprocess_ms": med(g.preprocess_ms for g, _ in runs),
            "prefill_ms": med(g.prefill_ms for g, _ in runs),
            "decode_ms": med(g.decode_ms for g, _ in runs),
            "ms_per_token": med(g.decode_ms / max(1, g.output_tokens - 1) for g, _ in runs),
            "total_ms": med(t for _, t in runs),
        }

    sides = [int(s) for s in args.sides.split(",")]
    results = {side: asyncio.run(one(side)) for side in sides}
    base = results[min(sides)]["total_ms"]
    rows = []
    for side, r in results.items():
        rows.append(
            [
                side,
                r["image_tokens"],
                f"{r['preprocess_ms']:.1f}",
                f"{r['prefill_ms']:.1f}",
                f"{r['decode_ms']:.1f}",
                f"{r['ms_per_token']:.2f}",
                f"{r['total_ms']:.1f}",
                f"{r['total_ms'] / base:.2f}x",
                REFERENCE.get(side, "-"),
            ]
        )
    print()
    print(
        markdown_table(
            [
                "long side px",
                "image tokens",
                "preprocess ms",
                "prefill (TTFT) ms",
                "decode ms",
                "ms/token",
                "total ms",
                f"vs {min(sides)} px",
                "A10G fp16 reference ms",
            ],
            rows,
        )
    )
    path = write_json(
        "vlm-" + ("8b" if args.full_size else "tiny") + f"-{args.device}",
        {"machine": machine(), "gpu": gpu, "results": results},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
