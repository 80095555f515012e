"""Text reading: character error rate, latency per 640x480 frame, blur refused.

    PYTHONPATH=. python benchmarks/text_bench.py [--repeat 2]

Scenes rendered in code (``benchmarks/text_signs.py``: several fonts, sizes,
perspective, texture, blur, rotated pages, English and Chinese) have their text
as ground truth; the text photos in ``../shared/data/images`` have
transcriptions written once by reading them (``benchmarks/text_data/photos.json``).
Frames go through ``read_jpeg`` as JPEG (quality 85), the way the phone sends them.

Reported:

- CER (edit distance / truth length, lines joined as they read, whitespace
  collapsed) on clean signs, harder signs and the sharp text photo. Targets:
  under 5 % on clean signs and the sharp photo.
- Latency per 640x480 frame (median, p95), and as a baseline in the same run,
  rapidocr's own one-call pipeline on the same frames. Target: median under 600 ms.
- Blurred images: how often the reader refuses (status "blurred", no words),
  and how many words it invented (read words not in the truth). Target: none invented.
- Cut-off signs: whether the edge the text runs off is reported.
- The confidence of correct and wrong lines, which sets ``min_confidence``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATA, machine, markdown_table, percentile, write_json  # noqa: E402
from benchmarks.text_signs import SignScene, find_font, render, scenes  # noqa: E402
from vision.reading import TextReading, join_lines, tokens  # noqa: E402
from vision.text import TextOptions, TextReader  # noqa: E402

DATA = Path(__file__).resolve().parent / "text_data"


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (characters)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def as_read(lines: list[str]) -> str:
    """Lines joined the way they are spoken, whitespace collapsed."""
    return " ".join(join_lines(lines).split())


def cer(truth: list[str], got: list[str]) -> float:
    reference = as_read(truth)
    return edit_distance(reference, as_read(got)) / max(1, len(reference))


def invented(truth: list[str], got: list[str]) -> int:
    """Words read that are nowhere in the truth (a guess a blind user cannot check)."""
    known = set(tokens(" ".join(truth)))
    return sum(1 for word in tokens(" ".join(got)) if word not in known)


def jpeg(image: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--repeat", type=int, default=2, help="timed passes over the 640x480 frames"
    )
    args = parser.parse_args()

    all_scenes = [s for s in scenes() if find_font(s.font) is not None]
    missing = sorted({s.font for s in scenes()} - {s.font for s in all_scenes})
    reader = TextReader()
    started = time.perf_counter()
    reader.load()
    load_ms = (time.perf_counter() - started) * 1000

    frames = {s.name: jpeg(render(s)) for s in all_scenes}
    results: dict[str, dict[str, Any]] = {}
    confidences: list[tuple[float, bool]] = []
    # Same models, no confidence threshold and no blur check: what the threshold must drop.
    calibrate = TextReader(TextOptions(min_confidence=0.0, max_edge_ratio=None))
    calibrate._engine = reader._engine
    for scene in all_scenes:
        reading = reader.read_jpeg(frames[scene.name])
        results[scene.name] = score_scene(scene, reading)
        if scene.kind in ("clean", "hard", "blurred"):
            loose = calibrate.read_jpeg(frames[scene.name])
            truth = {" ".join(line.split()) for line in scene.lines}
            confidences += [
                (line.confidence, " ".join(line.text.split()) in truth) for line in loose.lines
            ]

    # Latency per 640x480 frame: the reader, and rapidocr's own pipeline as the baseline.
    timed = [s for s in all_scenes if s.kind in ("clean", "hard") and s.rotate in (0, 180)]
    ours: list[float] = []
    base: list[float] = []
    engine = reader._engine
    for _ in range(args.repeat):
        for scene in timed:
            data = frames[scene.name]
            t0 = time.perf_counter()
            reader.read_jpeg(data)
            ours.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            with Image.open(io.BytesIO(data)) as img:
                engine(np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1]))
            base.append((time.perf_counter() - t0) * 1000)

    photos = read_photos(reader)

    print(f"\n## Text reading ({machine()})\n")
    print(f"rapidocr-onnxruntime 1.4.4 (PP-OCRv4, CPU), models loaded in {load_ms:.0f} ms")
    if missing:
        print(f"fonts missing, their scenes skipped: {', '.join(missing)}")
    rows = []
    for kind in ("clean", "hard"):
        group = [results[s.name] for s in all_scenes if s.kind == kind]
        rows.append(
            [
                f"rendered {kind} signs ({len(group)})",
                f"{100 * statistics.fmean(r['cer'] for r in group):.1f} %",
                f"{sum(r['exact'] for r in group)}/{len(group)}",
                "",
            ]
        )
    for photo in photos:
        if photo["expect"] == "read":
            rows.append(
                [photo["file"], f"{100 * photo['cer']:.1f} %", "", f"{photo['latency_ms']:.0f} ms"]
            )
    print(markdown_table(["text", "CER", "exact", "latency"], rows))

    blurred = [results[s.name] for s in all_scenes if s.kind == "blurred"]
    blurred += [p for p in photos if p["expect"] == "refuse"]
    print()
    print(
        markdown_table(
            ["blurred images", "refused (no words)", "words invented", "status"],
            [
                [
                    f"{len(blurred)} ({', '.join(str(b['name']) for b in blurred)})",
                    f"{sum(b['refused'] for b in blurred)}/{len(blurred)}",
                    sum(b["invented"] for b in blurred),
                    ", ".join(sorted({str(b["status"]) for b in blurred})),
                ]
            ],
        )
    )
    cut = [(s, results[s.name]) for s in all_scenes if s.kind == "cut"]
    rotated = [results[s.name] for s in all_scenes if s.rotate]
    print()
    print(
        markdown_table(
            ["640x480 frame latency", "median", "p95", "frames"],
            [
                [
                    "text reader (read_jpeg)",
                    f"{percentile(ours, 0.5):.0f} ms",
                    f"{percentile(ours, 0.95):.0f} ms",
                    len(ours),
                ],
                [
                    "baseline: rapidocr one call",
                    f"{percentile(base, 0.5):.0f} ms",
                    f"{percentile(base, 0.95):.0f} ms",
                    len(base),
                ],
            ],
        )
    )
    print(
        f"\nrotated pages read in order: {sum(r['exact'] for r in rotated)}/{len(rotated)} "
        f"(rotation found: {', '.join(str(r['rotation']) for r in rotated)}; "
        f"median {statistics.median(r['latency_ms'] for r in rotated):.0f} ms)"
    )
    found = sum(s.name.rsplit("-", 1)[1] in r["cut_off"] for s, r in cut)
    print(
        f"cut-off edge reported: {found}/{len(cut)} ("
        + ", ".join(f"{s.name} -> {r['cut_off']}" for s, r in cut)
        + ")"
    )
    right = sorted(c for c, ok in confidences if ok)
    wrong = sorted(c for c, ok in confidences if not ok)
    print(
        "line confidence (no threshold, no blur check): "
        f"correct lines min {right[0] if right else float('nan'):.2f} "
        f"(n={len(right)}), wrong lines max {wrong[-1] if wrong else float('nan'):.2f} "
        f"(n={len(wrong)}); min_confidence = {reader.options.min_confidence}"
    )
    worst = sorted(
        (r for r in results.values() if not r["exact"] and r["kind"] in ("clean", "hard")),
        key=lambda r: -r["cer"],
    )
    for r in worst[:5]:
        print(f"  miss {r['name']}: {r['got']!r}")
    path = write_json(
        "text_bench",
        {
            "machine": machine(),
            "scenes": results,
            "photos": photos,
            "latency_ms": {"reader": ours, "baseline": base},
            "confidences": confidences,
        },
    )
    print(f"\nresults: {path.relative_to(ROOT)}")


def score_scene(scene: SignScene, reading: TextReading) -> dict[str, Any]:
    got = [line.text for line in reading.lines]
    truth = scene.lines
    return {
        "name": scene.name,
        "kind": scene.kind,
        "status": reading.status,
        "cer": cer(truth, got),
        "exact": as_read(truth) == as_read(got),
        "refused": reading.status == "blurred" and not got,
        "invented": invented(truth, got),
        "cut_off": reading.cut_off,
        "rotation": reading.rotation,
        "latency_ms": reading.latency_ms,
        "got": got,
    }


def read_photos(reader: TextReader) -> list[dict[str, Any]]:
    truth = json.loads((DATA / "photos.json").read_text())["photos"]
    out: list[dict[str, Any]] = []
    for entry in truth:
        path = SHARED_DATA / "images" / entry["file"]
        if not path.is_file():
            print(f"skipped {entry['file']}: {path} is absent")
            continue
        with Image.open(path) as img:
            reading = reader.read_image(img.convert("RGB"))
        got = [line.text for line in reading.lines]
        out.append(
            {
                "name": entry["file"],
                "file": entry["file"],
                "expect": entry["expect"],
                "status": reading.status,
                "cer": cer(entry["lines"], got),
                "refused": reading.status == "blurred" and not got,
                "invented": invented(entry["lines"], got),
                "latency_ms": reading.latency_ms,
                "got": got,
            }
        )
    return out


if __name__ == "__main__":
    main()
