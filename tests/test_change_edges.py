"""The change detector where the first ones failed: the edge of the view, clipped
highlights at an auto-exposure step, and a still view with people walking in it.

Frames are made here (numpy + Pillow), so no shared data is needed; the sequences
in ``benchmarks/change_bench.py`` measure the same on real photos and video."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from tests.test_change import texture
from vision.change import ChangeDetector, ChangeOptions, TriggerReason

FPS = 10
VIEW_W, VIEW_H = 640, 480
QUIET = ChangeOptions(heartbeat_s=None)


def street(seed: int, size: tuple[int, int] = (1100, 700), sky: bool = False) -> np.ndarray:
    """A street-like texture in mid greys (RGB float); with ``sky``, the top third is
    bright clouds that a gain of 1.25 clips."""
    rng = np.random.default_rng(seed)
    base = texture(seed, size, levels=(30, 200), blocks=70, block_levels=(20, 210), rng=rng)
    if sky:  # bright clouds: shaded between 185 and 250, so a gain of 1.25 clips most of it
        rows = size[1] // 3
        clouds = rng.uniform(185, 250, (rows // 25 + 1, size[0] // 25 + 1)).astype(np.uint8)
        shade = Image.fromarray(clouds).resize((size[0], rows), Image.Resampling.BICUBIC)
        base[:rows] = np.asarray(shade, np.float32)[:, :, None]
    return base


def shot(view: np.ndarray, *, gain: float = 1.0, seed: int = 0) -> bytes:
    """One JPEG as a phone makes it: exposure gain, sensor noise, clipped at 255."""
    out = view * gain + np.random.default_rng(seed).normal(0, 2.0, view.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def pan(i: int) -> tuple[int, int]:
    """A slow pan to the right with a little hand shake."""
    rng = np.random.default_rng(i)
    return 60 + 6 * i + int(rng.integers(-2, 3)), 60 + int(rng.integers(-2, 3))


def fired(frames: list[bytes], options: ChangeOptions = QUIET) -> list[tuple[int, str]]:
    det = ChangeDetector(options)
    out = []
    for i, f in enumerate(frames):
        d = det.observe_jpeg(f, t=i / FPS)
        if d.fire:
            out.append((i, str(d.reason)))
    return out


def test_an_exposure_step_that_clips_the_sky_is_not_new_content() -> None:
    """Auto-exposure steps were most of the false triggers on the benchmark's walks:
    the sky is flat white in the brighter frame and not in the darker one."""
    world = street(1, sky=True)
    frames = []
    for i in range(40):
        x, y = pan(i)
        gain = 1.25 if 15 <= i < 28 else 1.0  # a step up, held, and back down
        frames.append(shot(world[y : y + VIEW_H, x : x + VIEW_W], gain=gain, seed=i))
    assert fired(frames) == [(0, "first-frame")]


def test_something_walking_in_at_the_edge_is_caught_within_half_a_second() -> None:
    """Something person-sized walks in at 16 px a frame while the camera pans;
    the issue's clock starts when 5% of the frame width (32 px) is inside."""
    world = street(2)
    figure = street(9, size=(150, 330)) * 0.45 + 15  # a person in dark, textured clothes
    for side in ("left", "right"):
        frames = []
        for i in range(40):
            x, y = pan(i)
            view = world[y : y + VIEW_H, x : x + VIEW_W].copy()
            inside = (i - 19) * 16  # 16 px inside on frame 20, 32 px on frame 21
            if inside > 0:
                width = min(inside, 150)
                if side == "right":
                    view[100:430, VIEW_W - inside : VIEW_W - inside + width] = figure[:, :width]
                else:
                    view[100:430, max(0, inside - 150) : inside] = figure[:, 150 - width :]
            frames.append(shot(view, seed=i))
        calls = fired(frames)
        assert [c for c in calls if 0 < c[0] < 20] == [], (side, calls)  # the pan alone: nothing
        event = 21
        late = [c for c in calls if c[0] >= event]
        assert late and late[0][0] <= event + 5, (side, calls)
        assert late[0][1] == TriggerReason.NEW_CONTENT


def people(view: np.ndarray, i: int) -> None:
    """Three dark figures crossing the upper band of a still view, all the time."""
    for k, (start, speed) in enumerate(((40, 5), (560, -4), (120, 6))):
        x = start + speed * i
        view[60 + 30 * k : 160 + 30 * k, x : x + 30] = (25, 25, 30)


def test_in_a_still_view_something_new_stands_out_from_people_walking_elsewhere() -> None:
    """A phone resting on a table: people keep crossing the top of the view (a
    busy square), then a low-contrast object, smaller than a person, appears in
    the quiet lower part. Against the whole view's noise (the people) it scored
    too little; against that part's own recent change it stands out. The same
    view without the object is the control: its calls are the people's."""
    world = street(3)
    view0 = world[100 : 100 + VIEW_H, 100 : 100 + VIEW_W]

    def frames(with_object: bool) -> list[bytes]:
        out = []
        for i in range(80):
            view = view0.copy()
            people(view, i)
            if with_object and i >= 68:
                view[330:390, 260:305] += 20  # 45x60 px, a little brighter than what it covers
            out.append(shot(view, seed=i))
        return out

    control = fired(frames(False))
    assert [c for c in control if c[0] >= 68] == [], control
    assert len([c for c in control if c[0] >= 5]) <= 6, control  # people: a look now and then
    calls = fired(frames(True))
    late = [c for c in calls if c[0] >= 68]
    assert late and late[0][0] <= 73, calls


def test_a_turn_while_the_lens_is_covered_carries_on() -> None:
    """Found by a review: a glitch whose first frame back was in the other
    orientation left a reference of the wrong shape (KeyError, every frame after)."""
    portrait = street(4, size=(480, 640))
    landscape = street(4, size=(640, 480))
    black = np.zeros((640, 480, 3), np.float32)
    views = [portrait] * 3 + [black] * 3 + [landscape] + [portrait] * 4
    det = ChangeDetector()
    for i, view in enumerate(views):
        det.observe_jpeg(shot(view, seed=i), t=i / FPS)  # raises nothing


def test_a_client_alternating_orientations_gets_one_look_per_cooldown() -> None:
    view = street(5, size=(640, 480))
    turned = np.ascontiguousarray(view.transpose(1, 0, 2))
    frames = [shot(view if i % 2 else turned, seed=i) for i in range(30)]  # 3 s
    calls = fired(frames)
    assert 4 <= len(calls) <= 7, calls  # every 0.5 s, not every frame
    assert calls[1][1] == TriggerReason.ORIENTATION


def test_a_view_coming_back_again_and_again_gets_one_look_per_cooldown() -> None:
    """Found by an attacker pass: a flat frame, then a new view for two frames, over
    and over at 30 fps, got a "view restored" look every 0.1 s (9 a second): the view
    coming back ignored the cooldown that a turn already had."""
    flat = np.full((VIEW_H, VIEW_W, 3), 128.0)
    frames = []
    for k in range(40):  # 4 s at 30 fps
        view = street(100 + k, size=(VIEW_W, VIEW_H))
        frames += [shot(flat, seed=3 * k), shot(view, seed=3 * k + 1), shot(view, seed=3 * k + 2)]
    det = ChangeDetector(QUIET)
    looks = [i / 30 for i, f in enumerate(frames) if det.observe_jpeg(f, t=i / 30).fire]
    assert len(looks) <= 4 / 0.5 + 1, looks  # one per cooldown at most
    assert all(b - a >= 0.5 - 1e-9 for a, b in itertools.pairwise(looks)), looks
    assert len(looks) >= 4, looks  # and the views that come back are still looked at


def smooth(seed: int, size: tuple[int, int] = (704, 544)) -> np.ndarray:
    """A smooth grey scene (bicubic noise), single channel, no hard edges."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (size[1] // 16 + 2, size[0] // 16 + 2)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), np.float32)


def test_a_flickering_light_does_not_hide_a_new_sign() -> None:
    """Found by a review: light flickering by 25 % every frame (an LED beating
    with the frame rate) made every frame an exposure step, so nothing was ever
    confirmed. It comes back to the level of two frames ago: not a step."""
    base = smooth(13) * 0.5 + 50
    for seed in range(4):
        rng = np.random.default_rng(seed)
        det = ChangeDetector()
        first = None
        for i in range(50):
            dy, dx = rng.integers(-2, 3, 2)
            view = base[16 + dy : 496 + dy, 16 + dx : 656 + dx].copy()
            if i >= 30:  # a sign comes into view and stays
                view[150:230, 250:330] = 230
                view[170:210, 270:310] = 10
            gain = 1.25 if i % 2 else 1.0
            noisy = view * gain + rng.normal(0, 1.5, view.shape)
            buf = io.BytesIO()
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
            d = det.observe_jpeg(buf.getvalue(), t=i / 15)
            if i >= 30 and (d.fire or d.held) and first is None:
                first = i
        assert first is not None and first <= 32, (seed, first)


def test_a_still_phone_nudged_a_little_is_not_new_content() -> None:
    """Found by a review: a still phone nudged by 2x3 px (under half a signature
    pixel, so no shift is measured) raised every textured cell at once, and the
    still view's per-cell score fired; against the typical cell it does not."""
    big = Image.fromarray(smooth(31).astype(np.uint8))
    for seed in range(2):
        rng = np.random.default_rng(seed)
        frames = []
        for i in range(80):
            dy, dx = (0.0, 0.0) if i < 40 else (2.0, 3.0)
            view = big.transform(
                (VIEW_W, VIEW_H),
                Image.Transform.AFFINE,
                (1, 0, 32 + dx, 0, 1, 32 + dy),
                resample=Image.Resampling.BILINEAR,
            )
            noisy = np.asarray(view, np.float32) + rng.normal(0, 1.5, (VIEW_H, VIEW_W))
            buf = io.BytesIO()
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
            frames.append(buf.getvalue())
        assert fired(frames) == [(0, "first-frame")], seed


def test_something_put_down_in_a_busy_still_view_is_looked_at() -> None:
    """Found by a blind-user pass: on the static square of ``vtest.avi`` at the
    page's 5 fps, a bag put down at 28 s was first looked at by the heartbeat, 4 s
    later: a spurious one-pixel shift (people crossing pull the phase correlation)
    ended the still view each time, and it took 20 frames to come back."""
    import cv2

    from tests.conftest import SHARED_DATA

    video = SHARED_DATA / "video" / "vtest.avi"
    if not video.exists():
        pytest.skip(f"benchmark data not present at {video} (only in the project's checkout)")
    cap = cv2.VideoCapture(str(video))
    frames = []
    for i in range(300):
        ok, bgr = cap.read()
        if not ok:
            break
        if i % 2 == 0:  # 10 fps -> the page's 5 fps
            frames.append(cv2.resize(bgr[:, :, ::-1], (VIEW_W, VIEW_H)))
    cap.release()
    assert len(frames) >= 145
    det = ChangeDetector()
    looks = []
    for k, rgb in enumerate(frames):
        t = k * 0.2
        img = rgb.copy()
        if t >= 28:
            img[400:470, 30:120] = (20, 20, 110)  # a navy bag, lower left, on the grass
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=70)
        d = det.observe_jpeg(buf.getvalue(), t)
        if d.fire and t >= 28:
            looks.append((round(t, 1), str(d.reason)))
    assert looks and looks[0][0] <= 28.5, looks


@pytest.mark.parametrize("step", [1, 3], ids=["15fps", "5fps"])
def test_leaves_in_wind_are_not_news_and_a_real_hand_reaching_in_is(step: int) -> None:
    """Recorded footage, nothing pasted in (``tree.avi``): 3.5 s of a tree in wind
    behind a window frame, then a hand reaching in from the top right. Leaves that
    move all the time are no reason to call the model; the hand is, within 500 ms,
    at the clip's 15 fps and at the phone page's 5."""
    from benchmarks.footage import TREE_HAND_FRAME, tree_hand_sequence
    from tests.conftest import SHARED_DATA

    seq = tree_hand_sequence(SHARED_DATA)
    if seq is None:
        pytest.skip(
            f"benchmark clip not present under {SHARED_DATA} (only in the project's checkout)"
        )
    det = ChangeDetector()
    looks = []
    for i in range(0, len(seq.frames), step):
        if det.observe_jpeg(seq.frames[i], i / seq.fps).fire:
            looks.append(i)
    assert looks[0] == 0  # the first frame
    assert [i for i in looks[1:] if i < TREE_HAND_FRAME] == [], looks
    after = [i for i in looks if i >= TREE_HAND_FRAME]
    assert after and (after[0] - TREE_HAND_FRAME) / seq.fps <= 0.5, looks


def _benchmark_walk(kind: str):  # -> benchmarks.sequences.Sequence
    """Four of the benchmark's renders (the same frames as ``change_bench.py --seed
    N``): seed 800 and 600, where the confirmation with edge slack was late; seed
    200, where a grey object appearing on an earlier grey one waited for a higher
    noise factor; seed 900, the still square where it waited for the still view."""
    from benchmarks import sequences
    from tests.conftest import SHARED_DATA

    img = SHARED_DATA / "images"
    video = SHARED_DATA / "video"
    if not (img / "building.jpg").exists() or not (video / "vtest.avi").exists():
        pytest.skip(f"benchmark data not present at {SHARED_DATA} (only in the project's checkout)")
    plan = [(4.35, "appear"), (10.65, "sign"), (16.25, "approach"), (23.75, "scene-cut")]
    walks = {  # name, photo, seed, the photo cut to
        "grey-on-grey": ("walk-home-events", "home.jpg", 222, "stuff.jpg"),
        "approach": ("walk-building-events", "building.jpg", 821, "home.jpg"),
    }
    if kind in walks:
        name, photo, seed, cut_to = walks[kind]
        return sequences.walking_sequence(
            name,
            img / photo,
            seconds=30.0,
            seed=seed,
            events=plan,
            cut_to=img / cut_to,
            props=img / "stuff.jpg",
        )
    if kind == "still-square":
        return sequences.static_video_sequence(
            "static-vtest-events",
            video / "vtest.avi",
            seconds=30.0,
            seed=907,
            events=[(5.45, "sign"), (12.15, "appear"), (18.55, "approach"), (25.85, "scene-cut")],
            cut_to=video / "tree.avi",
            props=img / "stuff.jpg",
        )
    return sequences.walking_entry_sequence(
        "walk-enter-from-right",
        img / "home.jpg",
        img / "stuff.jpg",
        seconds=15.0,
        seed=671,
        side="right",
    )


@pytest.mark.parametrize("kind", ["approach", "entry", "grey-on-grey", "still-square"])
def test_a_faint_grey_object_on_a_walk_is_looked_at_within_half_a_second(kind: str) -> None:
    """A grey object appears (at 30% of its size, then growing) on a walk past a
    facade, or a grey figure walks in from the right past carved stone of the same
    grey while the camera pans right. The confirmation (against the frame before
    the previous one) used to discount edges by the strongest gradient within 1 px,
    which took in the object's own outline: it fell under the threshold and the
    look came after 2 s (approach) or 900 ms (entry). Then a grey object appearing
    on an earlier one of the same grey on a shaky walk scored 2.8 against a noise
    threshold of 3.4 and was looked at after 600 ms; one put down next to people
    crossing a square scored 2.6 in the still view (which fired at 3) and waited
    900 ms. Every event is looked at within 500 ms."""
    seq = _benchmark_walk(kind)
    det = ChangeDetector()
    looks = [i for i, f in enumerate(seq.frames) if det.observe_jpeg(f, i / seq.fps).fire]
    for ev in seq.events:
        after = [i for i in looks if i >= ev.frame]
        assert after and (after[0] - ev.frame) / seq.fps <= 0.5, (ev, looks)


@pytest.mark.parametrize(
    "bad",
    [
        {"search_radius": -1},
        {"confirm_slack": -1},
        {"key_slack": 99},
        {"gradient_floor": 0.0},
        {"signature_width": 640},
        {"cell": 0},
        {"noise_window": 0},
    ],
)
def test_options_that_break_the_arithmetic_are_refused_when_made(bad: dict[str, float]) -> None:
    """Found by an attacker pass: a negative slack raised a broadcasting ValueError on
    the first frame, and a zero gradient floor gave inf and NaN scores."""
    with pytest.raises(ValueError, match="ChangeOptions"):
        ChangeOptions(**bad)  # type: ignore[arg-type]
