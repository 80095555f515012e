"""The change detector in the real world: nothing to see, turned phones, odd JPEGs.

Frames are made here (Pillow); the real footage benchmarks are in benchmarks/."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vision.change import (
    ChangeDetector,
    ChangeDetectorError,
    ChangeOptions,
    Decision,
    TriggerReason,
)


def jpeg(img: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85, **save)
    return buf.getvalue()


def scene(seed: int, size: tuple[int, int] = (640, 480), level: int = 128) -> Image.Image:
    """A textured view: blocks of varied grey (a street has edges everywhere)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(size[1] // 40 + 1, size[0] // 40 + 1), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.NEAREST).convert("RGB")
    arr = np.asarray(img, dtype=np.float32) * (level / 128)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def flat(level: int, noise: float = 1.5, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.clip(level + rng.normal(0, noise, size=(480, 640)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def run(frames: list[bytes], fps: float = 10.0, **options: object) -> list[Decision]:
    detector = ChangeDetector(ChangeOptions(**options))  # type: ignore[arg-type]
    return [detector.observe_jpeg(f, i / fps) for i, f in enumerate(frames)]


def test_a_covered_lens_is_a_state_not_a_stream_of_events() -> None:
    black = [jpeg(flat(3, seed=i)) for i in range(600)]  # a minute in a pocket at 10 fps
    decisions = run(black)
    assert sum(d.fire for d in decisions) == 0  # a black frame never goes to the model
    assert decisions[0].view == "nothing-to-see" and decisions[0].view_reason == "dark"
    assert [i for i, d in enumerate(decisions) if d.view_changed] == [0]  # said once


def test_a_plain_wall_costs_no_more_than_the_slow_heartbeat() -> None:
    wall = [jpeg(flat(150, seed=i)) for i in range(600)]
    decisions = run(wall, blind_heartbeat_s=30.0)
    assert sum(d.fire for d in decisions) <= 2  # at 0 s and 30 s
    assert all(d.view_reason == "featureless" for d in decisions)


def test_a_black_glitch_frame_mid_walk_costs_nothing() -> None:
    frames = [jpeg(scene(1)) for _ in range(10)] + [jpeg(flat(2))]
    frames += [jpeg(scene(1)) for _ in range(10)]
    decisions = run(frames)
    glitch = decisions[10]
    assert not glitch.fire and glitch.view_changed and glitch.view_reason == "dark"
    assert sum(d.fire for d in decisions) == 1  # only the first frame: the same view came back


def test_the_view_coming_back_is_looked_at_once_it_holds() -> None:
    frames = [jpeg(scene(1)) for _ in range(5)] + [jpeg(flat(2, seed=i)) for i in range(30)]
    frames += [jpeg(scene(7)) for _ in range(5)]
    decisions = run(frames)
    assert not decisions[35].fire  # one frame could be a light leak
    back = decisions[36]
    assert back.fire and back.reason == TriggerReason.VIEW_RESTORED and back.view_changed
    assert sum(d.fire for d in decisions) == 2


def test_turning_the_phone_starts_a_new_reference_and_is_analysed() -> None:
    landscape = [jpeg(scene(2)) for _ in range(8)]
    portrait = [jpeg(scene(2, size=(480, 640))) for _ in range(8)]
    decisions = run(landscape + portrait)
    assert decisions[8].fire and decisions[8].reason == TriggerReason.ORIENTATION
    assert not any(d.fire for d in decisions[9:])


def test_tiny_grey_cmyk_progressive_and_exif_rotated_frames() -> None:
    base = scene(3)
    exif = Image.Exif()
    exif[0x0112] = 6  # the phone says: rotate 90 degrees to show it upright
    frames = [
        jpeg(base),
        jpeg(base.convert("L")),
        jpeg(base.convert("CMYK")),
        jpeg(base, progressive=True),
        jpeg(base, exif=exif),  # shown as portrait: a turn
        jpeg(Image.new("RGB", (1, 1), (90, 90, 90))),  # one grey pixel: nothing to see
        jpeg(base),
        jpeg(base),
    ]
    decisions = run(frames, cooldown_s=0.0)
    assert [d.fire for d in decisions[1:4]] == [False, False, False]  # the same view
    assert decisions[4].fire and decisions[4].reason == TriggerReason.ORIENTATION
    assert decisions[5].view_reason == "featureless"
    assert decisions[7].fire and decisions[7].reason == TriggerReason.VIEW_RESTORED


def test_a_held_change_reports_its_own_reason() -> None:
    detector = ChangeDetector(ChangeOptions(cooldown_s=1.0))
    a, b = jpeg(scene(4)), jpeg(scene(5))
    detector.observe_jpeg(a, 0.0)
    held = detector.observe_jpeg(b, 0.2)  # a new view inside the cooldown
    assert held.held and held.reason == TriggerReason.SCENE_CUT
    later = detector.observe_jpeg(b, 1.3)
    assert later.fire and later.reason == TriggerReason.SCENE_CUT


def test_decode_errors_keep_pillows_reason() -> None:
    data = jpeg(scene(6))
    with pytest.raises(ChangeDetectorError, match="image file is truncated"):
        ChangeDetector().observe_jpeg(data[: len(data) // 3], 0.0)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 900), st.integers(1, 900)), min_size=1, max_size=5),
    mode=st.sampled_from(["RGB", "L", "CMYK"]),
    damage=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(2, 4000)),
)
def test_only_a_decision_or_the_detectors_own_error_comes_out(
    sizes: list[tuple[int, int]], mode: str, damage: list[tuple[int, int]], cut: int | None
) -> None:
    detector = ChangeDetector()
    for n, (w, h) in enumerate(sizes):
        img = Image.new(mode, (w, h), 128 if mode == "L" else None)
        data = bytearray(jpeg(img))
        for pos, value in damage:
            if pos < len(data):
                data[pos] = value
        if cut is not None:
            data = data[:cut]
        try:
            decision = detector.observe_jpeg(bytes(data), n * 0.1)
        except ChangeDetectorError:
            continue
        assert decision.view in ("ok", "nothing-to-see")
