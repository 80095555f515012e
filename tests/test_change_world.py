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
    # said once, when it has lasted glitch_s (1 s: frame 10), not on every frame
    assert [i for i, d in enumerate(decisions) if d.view_changed] == [10]


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
    assert not glitch.fire and glitch.view_reason == "dark"
    assert not any(d.view_changed for d in decisions)  # 100 ms of black is not told
    assert sum(d.fire for d in decisions) == 1  # only the first frame: the same view came back


def test_nothing_to_see_is_told_once_it_lasts_and_its_end_only_then() -> None:
    frames = [jpeg(scene(1)) for _ in range(5)] + [jpeg(flat(2, seed=i)) for i in range(15)]
    frames += [jpeg(scene(1)) for _ in range(5)]
    decisions = run(frames)
    told = [i for i, d in enumerate(decisions) if d.view_changed]
    assert told == [15, 21]  # 1 s into the dark; the second frame of the view back
    assert decisions[15].view == "nothing-to-see" and decisions[21].view == "ok"


def test_a_lit_sign_in_a_dark_corridor_is_analysed() -> None:
    corridor = flat(8, noise=2.0)  # mean level 8: dark by the mean alone
    lit = corridor.copy()
    lit.paste((235, 240, 235), (280, 60, 380, 100))  # a lit EXIT sign, 100x40 px
    assert np.asarray(lit.convert("L")).mean() < 20
    decisions = run([jpeg(lit)] * 3)
    assert decisions[0].view == "ok" and decisions[0].fire  # looked at, not "dark"
    dark = run([jpeg(corridor)])
    assert dark[0].view_reason == "dark"  # the same corridor without the sign


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


def _content(draw: st.DrawFn, size: tuple[int, int]) -> Image.Image:
    """Textured content (noise, blocks, gradients or flat) of ``size``."""
    w, h = size
    kind = draw(st.sampled_from(["noise", "blocks", "gradient", "flat"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    level = draw(st.integers(0, 255))
    if kind == "noise":
        arr = rng.normal(level, draw(st.floats(0.5, 80.0)), (h, w, 3))
    elif kind == "blocks":
        small = rng.uniform(0, 255, (max(1, h // 16), max(1, w // 16), 3)).astype(np.uint8)
        arr = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.NEAREST), float)
    elif kind == "gradient":
        ramp = np.linspace(0, draw(st.floats(1.0, 255.0)), w)[None, :, None]
        arr = np.broadcast_to(level / 2 + ramp, (h, w, 3))
    else:
        arr = np.full((h, w, 3), float(level))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One JPEG as a phone, or a broken phone, might send it."""
    size = draw(st.tuples(st.integers(1, 700), st.integers(1, 700)))
    img = _content(draw, size)
    mode = draw(st.sampled_from(["RGB", "L", "CMYK"]))
    save: dict[str, object] = {"progressive": draw(st.booleans())}
    orientation = draw(st.sampled_from([None, 1, 3, 6, 8, 2, 5, 7, 4, 0, 9]))
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif
    data = bytearray(jpeg(img.convert(mode), **save))
    for pos, value in draw(
        st.lists(st.tuples(st.integers(0, 20_000), st.integers(0, 255)), max_size=6)
    ):
        if pos < len(data):
            data[pos] = value
    cut = draw(st.one_of(st.none(), st.integers(2, 20_000)))
    return bytes(data[:cut] if cut is not None else data)


@settings(max_examples=120, deadline=None)
@given(
    sequence=st.lists(frames(), min_size=1, max_size=6),
    steps=st.lists(st.floats(0.0, 2.0), min_size=6, max_size=6),
    repeat=st.integers(1, 3),
)
def test_only_a_decision_or_the_detectors_own_error_comes_out(
    sequence: list[bytes], steps: list[float], repeat: int
) -> None:
    """Frames of changing size, shape, mode, orientation and damage, some repeated
    (so the comparison, not only the first-frame path, runs): only a decision or
    ``ChangeDetectorError`` may come out."""
    detector = ChangeDetector()
    t = 0.0
    for n, data in enumerate(sequence):
        for _ in range(repeat):
            t += steps[n]
            try:
                decision = detector.observe_jpeg(data, t)
            except ChangeDetectorError:
                continue
            assert isinstance(decision, Decision)
            assert decision.view in ("ok", "nothing-to-see")
