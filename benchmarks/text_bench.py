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
- Photos without legible text (a building, a tower, a desk, a street): words
  read from them are all invented.
- The reader with its previous settings (``PREVIOUS``: rapidocr's detection
  size, no cap on enlargement, no letter/digit mending), measured in the same
  run on the same frames, so before and after share the machine's load.
- Letter/digit mending: lines it changed, whether into the true line, and
  whether it would alter any ground-truth line.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATA, machine, markdown_table, percentile, write_json  # noqa: E402
from benchmarks.text_signs import SignScene, find_font, render, scenes  # noqa: E402
from vision.reading import TextReading, fix_confusions, join_lines, tokens  # noqa: E402
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


PREVIOUS = TextOptions(detect_side=736, detect_max_upscale=None, fix_confusions=False)
"""The reader's settings before this benchmark's latency fix (rapidocr's detection size,
no cap on enlargement, no letter/digit mending), measured
in the same run for comparison."""


@dataclass
class Run:
    """One reader setting's results over every scene and photo."""

    label: str
    reader: TextReader
    scenes: dict[str, dict[str, Any]] = field(default_factory=dict)
    photos: list[dict[str, Any]] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--repeat", type=int, default=2, help="timed passes over the 640x480 frames"
    )
    parser.add_argument(
        "--no-previous",
        action="store_true",
        help="skip the reader with its previous settings (halves the run time)",
    )
    args = parser.parse_args()

    all_scenes = [s for s in scenes() if find_font(s.font) is not None]
    missing = sorted({s.font for s in scenes()} - {s.font for s in all_scenes})
    reader = TextReader()
    started = time.perf_counter()
    reader.load()
    load_ms = (time.perf_counter() - started) * 1000
    engine = reader._engine

    def sharing(options: TextOptions) -> TextReader:
        other = TextReader(options)
        other._engine = engine  # same loaded models
        return other

    runs = [Run("text reader", reader)]
    if not args.no_previous:
        runs.append(Run("previous settings (detect 736, no cap, no mending)", sharing(PREVIOUS)))

    frames = {s.name: jpeg(render(s)) for s in all_scenes}
    confidences: list[tuple[float, bool]] = []
    # Same models, no confidence threshold, no blur check, no mending: what the threshold
    # must drop, and which wrong lines the mending has to catch.
    calibrate = sharing(TextOptions(min_confidence=0.0, max_edge_ratio=None, fix_confusions=False))
    for scene in all_scenes:
        for run in runs:
            run.scenes[scene.name] = score_scene(scene, run.reader.read_jpeg(frames[scene.name]))
        if scene.kind in ("clean", "hard", "blurred"):
            loose = calibrate.read_jpeg(frames[scene.name])
            truth = {" ".join(line.split()) for line in scene.lines}
            confidences += [
                (line.confidence, " ".join(line.text.split()) in truth) for line in loose.lines
            ]

    # Latency per 640x480 frame: each setting, and rapidocr's own pipeline as the baseline,
    # interleaved frame by frame so the machine's load falls on all of them alike.
    timed = [s for s in all_scenes if s.kind in ("clean", "hard") and s.rotate in (0, 180)]
    base: list[float] = []
    for _ in range(args.repeat):
        for scene in timed:
            data = frames[scene.name]
            for run in runs:
                t0 = time.perf_counter()
                run.reader.read_jpeg(data)
                run.latency.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            with Image.open(io.BytesIO(data)) as img:
                engine(np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1]))
            base.append((time.perf_counter() - t0) * 1000)

    for run, photos_read in zip(
        runs, read_photos([run.reader for run in runs], args.repeat), strict=True
    ):
        run.photos = photos_read

    print(f"\n## Text reading ({machine()})\n")
    print(f"rapidocr-onnxruntime 1.4.4 (PP-OCRv4, CPU), models loaded in {load_ms:.0f} ms")
    if missing:
        print(f"fonts missing, their scenes skipped: {', '.join(missing)}")
    now = runs[0]
    results = now.scenes
    photos = now.photos
    rows = []
    for kind in ("clean", "hard"):
        row = [f"rendered {kind} signs ({sum(s.kind == kind for s in all_scenes)})"]
        for run in runs:
            group = [run.scenes[s.name] for s in all_scenes if s.kind == kind]
            row += [
                f"{100 * statistics.fmean(r['cer'] for r in group):.1f} %",
                f"{sum(r['exact'] for r in group)}/{len(group)}",
                "",
            ]
        rows.append(row)
    for i, photo in enumerate(photos):
        if photo["expect"] == "read":
            row = [photo["file"]]
            for run in runs:
                p = run.photos[i]
                row += [f"{100 * p['cer']:.1f} %", "", f"{p['latency_ms']:.0f} ms"]
            rows.append(row)
    headers = ["text"]
    for run in runs:
        tag = "" if run is now else " (previous)"
        headers += [f"CER{tag}", f"exact{tag}", f"latency{tag}"]
    print(markdown_table(headers, rows))

    print()
    rows = []
    for run in runs:
        blurred = [run.scenes[s.name] for s in all_scenes if s.kind == "blurred"]
        blurred += [p for p in run.photos if p["expect"] == "refuse"]
        rows.append(
            [
                run.label,
                f"{sum(b['refused'] for b in blurred)}/{len(blurred)}",
                sum(b["invented"] for b in blurred),
                ", ".join(sorted({str(b["status"]) for b in blurred})),
            ]
        )
    names = [s.name for s in all_scenes if s.kind == "blurred"]
    names += [p["file"] for p in photos if p["expect"] == "refuse"]
    print(f"blurred images: {len(names)} ({', '.join(names)})")
    print(markdown_table(["setting", "refused (no words)", "words invented", "status"], rows))

    empty = [p["file"] for p in photos if p["expect"] == "none"]
    if empty:
        print()
        print(f"photos without legible text: {len(empty)} ({', '.join(empty)})")
        rows = []
        for run in runs:
            nothing = [p for p in run.photos if p["expect"] == "none"]
            rows.append(
                [
                    run.label,
                    f"{sum(not p['got'] for p in nothing)}/{len(nothing)}",
                    sum(p["invented"] for p in nothing),
                    ", ".join(f"{p['file']}: {p['status']}" for p in nothing),
                    f"{statistics.median(p['latency_ms'] for p in nothing):.0f} ms",
                ]
            )
        print(
            markdown_table(
                ["setting", "no words read", "words invented", "status", "median latency"], rows
            )
        )

    print()
    latency_rows: list[list[Any]] = [
        [
            f"{run.label} (read_jpeg)",
            f"{percentile(run.latency, 0.5):.0f} ms",
            f"{percentile(run.latency, 0.95):.0f} ms",
            f"{percentile(run.latency, 0.5) / percentile(base, 0.5):.2f}",
            len(run.latency),
        ]
        for run in runs
    ]
    latency_rows.append(
        [
            "baseline: rapidocr one call (its default detection size)",
            f"{percentile(base, 0.5):.0f} ms",
            f"{percentile(base, 0.95):.0f} ms",
            "1.00",
            len(base),
        ]
    )
    print(
        markdown_table(
            ["640x480 frame latency", "median", "p95", "median / baseline", "frames"],
            latency_rows,
        )
    )

    cut = [(s, results[s.name]) for s in all_scenes if s.kind == "cut"]
    rotated = [results[s.name] for s in all_scenes if s.rotate]
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
        "line confidence (no threshold, no blur check, no mending): "
        f"correct lines min {right[0] if right else float('nan'):.2f} "
        f"(n={len(right)}), wrong lines max {wrong[-1] if wrong else float('nan'):.2f} "
        f"(n={len(wrong)}); min_confidence = {reader.options.min_confidence}"
    )
    print(mending_report(all_scenes, results, photos))
    if len(runs) > 1:
        print(would_mend(all_scenes, runs[1]))
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
            "runs": {
                run.label: {
                    "scenes": run.scenes,
                    "photos": run.photos,
                    "latency_ms": run.latency,
                }
                for run in runs
            },
            "baseline_latency_ms": base,
            "confidences": confidences,
        },
    )
    print(f"\nresults: {path.relative_to(ROOT)}")


def would_mend(all_scenes: list[SignScene], run: Run) -> str:
    """``fix_confusions`` applied to a reading made without it: what it would have changed."""
    truth = {s.name: {" ".join(t.split()) for t in s.lines} for s in all_scenes}
    changed = [
        (name, line, fix_confusions(line))
        for name, r in run.scenes.items()
        for line in r["got"]
        if fix_confusions(line) != line
    ]
    right = sum(" ".join(new.split()) in truth[name] for name, _, new in changed)
    wrong_before = sum(" ".join(old.split()) in truth[name] for name, old, _ in changed)
    return (
        f"  on the {run.label} readings it would change {len(changed)} lines: {right} into the "
        f"true line, {wrong_before} that were right"
        + (f" ({', '.join(f'{a!r} -> {b!r}' for _, a, b in changed)})" if changed else "")
    )


def mending_report(
    all_scenes: list[SignScene], results: dict[str, dict[str, Any]], photos: list[dict[str, Any]]
) -> str:
    """What ``fix_confusions`` changed: lines mended right, mended wrong, and whether it
    would alter any line of the ground truth (a correct reading it must leave alone)."""
    truth = {s.name: s.lines for s in all_scenes}
    entries = json.loads((DATA / "photos.json").read_text())["photos"]
    truth.update({e["file"]: e["lines"] for e in entries})
    every_truth = [line for lines in truth.values() for line in lines]
    altered = [line for line in every_truth if fix_confusions(line) != line]
    mended = [(name, m) for name, r in results.items() for m in r["mended"]]
    mended += [(p["file"], m) for p in photos for m in p["mended"]]
    good = [
        (name, m)
        for name, m in mended
        if " ".join(m[1].split()) in {" ".join(t.split()) for t in truth[name]}
    ]
    return (
        f"letter/digit mending: {len(mended)} lines changed, {len(good)} into the true line"
        + (f" ({', '.join(f'{a!r} -> {b!r}' for _, (a, b) in mended)})" if mended else "")
        + f"; ground-truth lines it would alter: {len(altered)}/{len(every_truth)}"
        + (f" ({altered})" if altered else "")
    )


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
        "mended": mended(reading),
    }


def read_photos(readers: list[TextReader], repeat: int) -> list[list[dict[str, Any]]]:
    """Each photo read by each reader, ``repeat`` times interleaved (the machine's load
    falls on all alike); scored on the first reading, timed by the median."""
    truth = json.loads((DATA / "photos.json").read_text())["photos"]
    out: list[list[dict[str, Any]]] = [[] for _ in readers]
    for entry in truth:
        path = SHARED_DATA / "images" / entry["file"]
        if not path.is_file():
            print(f"skipped {entry['file']}: {path} is absent")
            continue
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        readings: list[list[TextReading]] = [[] for _ in readers]
        for _ in range(max(1, repeat)):
            for k, reader in enumerate(readers):
                readings[k].append(reader.read_image(rgb))
        for k, taken in enumerate(readings):
            reading = taken[0]
            got = [line.text for line in reading.lines]
            out[k].append(
                {
                    "name": entry["file"],
                    "file": entry["file"],
                    "expect": entry["expect"],
                    "status": reading.status,
                    "cer": cer(entry["lines"], got),
                    "refused": reading.status == "blurred" and not got,
                    "invented": invented(entry["lines"], got),
                    "latency_ms": statistics.median(r.latency_ms for r in taken),
                    "got": got,
                    "mended": mended(reading),
                }
            )
    return out


def mended(reading: TextReading) -> list[tuple[str, str]]:
    """(as recognised, as spoken) for each line ``fix_confusions`` changed."""
    return [(line.read_as, line.text) for line in reading.lines if line.read_as is not None]


if __name__ == "__main__":
    main()
