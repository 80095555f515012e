"""Test sequences with ground truth for the change-detector benchmark.

Walking sequences are rendered from the street photos in ``../shared/data``:
a virtual phone camera pans, bobs with each step, rolls, zooms a little,
re-exposes and adds sensor noise and JPEG artefacts (ego-motion with no new
content). Events are placed in the *world* (pasted into the photo), so they
move with the camera like real objects: an object that appears, an object that
approaches (grows), a sign that comes into view, and a cut to another photo
(turned a corner). The static-camera videos get the same events pasted in.
"""

from __future__ import annotations

import io
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

VIEW = (640, 480)
FPS = 10.0
WORLD_WIDTH = 1200


@dataclass(kw_only=True)
class Event:
    """Ground truth: something the model should be called for, from ``frame`` on."""

    frame: int
    kind: str  # appear | approach | sign | scene-cut


@dataclass(kw_only=True, repr=False)
class Sequence:
    """JPEG frames at ``fps`` with their events; ``ego_motion`` marks walking clips."""

    name: str
    frames: list[bytes]
    events: list[Event] = field(default_factory=list)
    fps: float = FPS
    ego_motion: bool = True

    def __repr__(self) -> str:
        return f"Sequence({self.name}, {len(self.frames)} frames, {len(self.events)} events)"


@dataclass(kw_only=True)
class _Insert:
    start: int
    patch: Image.Image
    world_xy: tuple[float, float]
    grow_frames: int = 0
    start_scale: float = 1.0


def _world(path: Path) -> Image.Image:
    img = Image.open(path).convert("RGB")
    h = round(img.height * WORLD_WIDTH / img.width)
    return img.resize((WORLD_WIDTH, max(h, 900)), Image.Resampling.BICUBIC)


def _sign_patch(text: str) -> Image.Image:
    font = ImageFont.load_default(size=44)
    probe = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
    patch = Image.new("RGB", (int(x1 - x0) + 40, int(y1 - y0) + 40), (245, 245, 240))
    draw = ImageDraw.Draw(patch)
    draw.rectangle([0, 0, patch.width - 1, patch.height - 1], outline=(20, 90, 30), width=6)
    draw.text((20 - x0, 20 - y0), text, fill=(10, 10, 10), font=font)
    return patch


def _object_patch(source: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    patch = source.crop(box).resize((150, 200), Image.Resampling.BILINEAR)
    ImageDraw.Draw(patch).rectangle([0, 0, 149, 199], outline=(30, 30, 30), width=4)
    return patch


class WalkingCamera:
    """The pose of a hand-held phone on a walk, as a function of frame index."""

    def __init__(self, seed: int, world_size: tuple[int, int]) -> None:
        rng = np.random.default_rng(seed)
        self.world = world_size
        self.phase = rng.uniform(0, 2 * math.pi, 6)
        raw = rng.normal(0, 2.5, (4000, 2))
        self.shake = np.array(
            [np.convolve(raw[:, k], np.ones(3) / 3, mode="same") for k in (0, 1)]
        ).T
        self.step_hz = rng.uniform(1.6, 2.0)

    def pose(self, i: int) -> tuple[float, float, float, float, float]:
        """Centre x, centre y, scale, roll (radians) and exposure gain at frame ``i``."""
        t = i / FPS
        p = self.phase
        w, h = self.world
        cx = w / 2 + 180 * math.sin(2 * math.pi * t / 14 + p[0]) + self.shake[i, 0]
        cy = h / 2 + 40 * math.sin(2 * math.pi * t / 9 + p[1]) + self.shake[i, 1]
        cy += 7 * math.sin(2 * math.pi * self.step_hz * t + p[2])  # the bob of each step
        scale = 1.0 + 0.06 * math.sin(2 * math.pi * t / 11 + p[3])
        roll = math.radians(2.5) * math.sin(2 * math.pi * self.step_hz / 2 * t + p[4])
        gain = 1.0 + 0.25 * math.sin(2 * math.pi * t / 7 + p[5])
        if int(t) % 8 == 5:  # auto-exposure steps
            gain *= 1.25
        return cx, cy, scale, roll, gain


def render(
    world: Image.Image,
    pose: tuple[float, float, float, float, float],
    rng: np.random.Generator,
    *,
    noise: float = 3.0,
    quality: int = 75,
) -> bytes:
    """One JPEG frame of ``world`` seen from ``pose``."""
    return _finish(view_of(world, pose), pose[4], rng, noise, quality)


def view_of(world: Image.Image, pose: tuple[float, float, float, float, float]) -> Image.Image:
    """What the camera at ``pose`` sees of ``world`` (before exposure, noise, JPEG)."""
    cx, cy, scale, roll, _ = pose
    a, b = math.cos(roll) / scale, -math.sin(roll) / scale
    d, e = math.sin(roll) / scale, math.cos(roll) / scale
    u0, v0 = VIEW[0] / 2, VIEW[1] / 2
    coeffs = (a, b, cx - a * u0 - b * v0, d, e, cy - d * u0 - e * v0)
    return world.transform(VIEW, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)


def _finish(
    view: Image.Image, gain: float, rng: np.random.Generator, noise: float, quality: int
) -> bytes:
    arr = np.asarray(view, dtype=np.float32) * gain
    if noise:
        arr += rng.normal(0, noise, arr.shape).astype(np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _paste(world: Image.Image, ins: _Insert, i: int) -> None:
    if i < ins.start:
        return
    patch = ins.patch
    if ins.grow_frames:
        k = min(1.0, (i - ins.start) / ins.grow_frames)
        s = ins.start_scale + (1.0 - ins.start_scale) * k
        patch = patch.resize((max(4, round(patch.width * s)), max(4, round(patch.height * s))))
    x, y = ins.world_xy
    world.paste(patch, (round(x - patch.width / 2), round(y - patch.height / 2)))


def walking_sequence(
    name: str,
    photo: Path,
    *,
    seconds: float,
    seed: int,
    events: list[tuple[float, str]] | None = None,
    cut_to: Path | None = None,
    props: Path | None = None,
) -> Sequence:
    """A walk past ``photo``; ``events`` are (time s, kind) with kind in
    appear/approach/sign/scene-cut."""
    base = _world(photo)
    other = _world(cut_to) if cut_to else None
    prop_src = Image.open(props).convert("RGB") if props else base
    cam = WalkingCamera(seed, base.size)
    rng = np.random.default_rng(seed + 1)
    n = round(seconds * FPS)
    inserts: list[_Insert] = []
    truth: list[Event] = []
    cut_at: int | None = None
    signs = itertools.cycle(["EXIT", "BUS STOP", "CAUTION WET FLOOR", "PLATFORM 2"])
    for at, kind in events or []:
        i = round(at * FPS)
        cx, cy, *_ = cam.pose(i)
        side = -1 if len(truth) % 2 else 1  # alternate sides so events do not overlap
        where = (cx + side * rng.uniform(80, 170), cy + rng.uniform(-50, 50))
        if kind == "appear":
            box = (int(rng.integers(0, 300)), int(rng.integers(0, 200)))
            patch = _object_patch(prop_src, (box[0], box[1], box[0] + 180, box[1] + 240))
            inserts.append(_Insert(start=i, patch=patch, world_xy=where))
        elif kind == "approach":
            patch = _object_patch(prop_src, (200, 100, 440, 420)).resize((220, 300))
            inserts.append(
                _Insert(start=i, patch=patch, world_xy=where, grow_frames=25, start_scale=0.3)
            )
        elif kind == "sign":
            inserts.append(_Insert(start=i, patch=_sign_patch(next(signs)), world_xy=where))
        elif kind == "scene-cut":
            cut_at = i
        else:
            raise ValueError(kind)
        truth.append(Event(frame=i, kind=kind))
    frames = []
    for i in range(n):
        world = other if (cut_at is not None and i >= cut_at and other is not None) else base
        if inserts:
            world = world.copy()
            for ins in inserts:
                if cut_at is None or i < cut_at or ins.start >= cut_at:
                    _paste(world, ins, i)
        frames.append(render(world, cam.pose(i), rng))
    return Sequence(name=name, frames=frames, events=truth)


def static_video_sequence(
    name: str,
    video: Path,
    *,
    seconds: float,
    seed: int,
    events: list[tuple[float, str]],
    cut_to: Path | None = None,
    props: Path | None = None,
) -> Sequence:
    """A static-camera video at 10 fps with events pasted in at known frames."""
    from seealoud_client.frames import iter_images

    n = round(seconds * FPS)
    images = [img.resize(VIEW) for img in itertools.islice(iter_images(video), n)]
    other = [img.resize(VIEW) for img in itertools.islice(iter_images(cut_to), n)] if cut_to else []
    prop_src = Image.open(props).convert("RGB") if props else images[0]
    rng = np.random.default_rng(seed)
    inserts: list[_Insert] = []
    truth: list[Event] = []
    cut_at: int | None = None
    for at, kind in events:
        i = round(at * FPS)
        where = (rng.uniform(150, 490), rng.uniform(150, 330))
        if kind == "sign":
            inserts.append(_Insert(start=i, patch=_sign_patch("NO ENTRY"), world_xy=where))
        elif kind == "appear":
            inserts.append(
                _Insert(start=i, patch=_object_patch(prop_src, (0, 0, 200, 260)), world_xy=where)
            )
        elif kind == "approach":
            inserts.append(
                _Insert(
                    start=i,
                    patch=_object_patch(prop_src, (200, 100, 440, 420)),
                    world_xy=where,
                    grow_frames=25,
                    start_scale=0.3,
                )
            )
        elif kind == "scene-cut":
            cut_at = i
        truth.append(Event(frame=i, kind=kind))
    frames = []
    for i in range(len(images)):
        if cut_at is not None and i >= cut_at and other:
            img = other[(i - cut_at) % len(other)].copy()
        else:
            img = images[i].copy()
        for ins in inserts:
            if cut_at is None or i < cut_at:
                _paste(img, ins, i)
        frames.append(_finish(img, 1.0, rng, noise=0.0, quality=80))
    return Sequence(name=name, frames=frames, events=truth, ego_motion=False)


def build_all(data: Path, *, seconds: float = 30.0, seed: int = 0) -> list[Sequence]:
    """The benchmark's sequences: ego-motion-only walks, walks with events, static videos.

    ``seed`` changes every walk's camera path, noise and event placement: the
    detector's defaults were chosen on seed 0, other seeds are held out.
    """
    img = data / "images"
    photos = ["leuvenA.jpg", "building.jpg", "home.jpg", "stuff.jpg"]
    seqs: list[Sequence] = []
    for k, name in enumerate(photos):
        seqs.append(
            walking_sequence(
                f"walk-{Path(name).stem}-quiet", img / name, seconds=seconds, seed=seed + 10 + k
            )
        )
    # Off the whole second, so a fixed 1 s sampling loop gets no lucky phase.
    plan = [(4.35, "appear"), (10.65, "sign"), (16.25, "approach"), (23.75, "scene-cut")]
    for k, name in enumerate(photos):
        cut_to = img / photos[(k + 1) % len(photos)]
        seqs.append(
            walking_sequence(
                f"walk-{Path(name).stem}-events",
                img / name,
                seconds=seconds,
                seed=seed + 20 + k,
                events=plan,
                cut_to=cut_to,
                props=img / "stuff.jpg",
            )
        )
    video = data / "video"
    seqs.append(
        static_video_sequence(
            "static-vtest-events",
            video / "vtest.avi",
            seconds=seconds,
            seed=seed + 7,
            events=[(5.45, "sign"), (12.15, "appear"), (18.55, "approach"), (25.85, "scene-cut")],
            cut_to=video / "tree.avi",
            props=img / "stuff.jpg",
        )
    )
    return seqs


def _shaky(img: Image.Image, i: int, rng: np.random.Generator, amp: float = 6.0) -> Image.Image:
    """A hand-held view of ``img``: a few pixels of shake and bob, cropped to VIEW."""
    dx = amp * np.sin(i * 0.9) + rng.normal(0, 1.0)
    dy = amp * np.cos(i * 1.3) + rng.normal(0, 1.0)
    coeffs = (1.0, 0.0, 40 + dx, 0.0, 1.0, 30 + dy)
    return img.transform(VIEW, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)


def _surface(level: float, texture: float, seed: int) -> Image.Image:
    """A wall: ``level`` grey with ``texture`` (std, 0-255) of fine blotches, a little
    larger than the view so it can shake."""
    rng = np.random.default_rng(seed)
    w, h = VIEW[0] + 100, VIEW[1] + 80
    small = rng.normal(0, texture, size=(h // 6, w // 6)).astype(np.float32)
    tex = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))
    ramp = np.linspace(-4, 4, w, dtype=np.float32)[None, :]  # uneven lighting
    arr = np.clip(level + tex + ramp, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def grain_sequence(name: str, *, seconds: float, seed: int, level: float) -> Sequence:
    """A flat frame at ``level`` with only per-pixel sensor grain (std 2, fresh each
    frame): a covered lens (3), a dark room (8), a dim wall (40), a grey wall (150).
    No texture, no lighting ramp: consecutive frames share nothing but their level,
    which is what flooded the first detector (a scene cut at every cooldown)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(round(seconds * FPS)):
        arr = level + rng.normal(0, 2.0, (VIEW[1], VIEW[0]))
        out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=80)
        frames.append(buf.getvalue())
    return Sequence(name=name, frames=frames, ego_motion=True)


def nothing_to_see_sequence(name: str, *, seconds: float, seed: int, kind: str) -> Sequence:
    """Covered lens, dark room, plain or textured wall, or a pocket with light leaks:
    nothing happens, so every model call beyond the heartbeat is a false trigger."""
    rng = np.random.default_rng(seed)
    n = round(seconds * FPS)
    level, texture, noise = {
        "covered": (3.0, 0.5, 1.0),
        "dark-room": (8.0, 2.0, 2.5),
        "plain-wall": (150.0, 1.5, 2.0),
        "textured-wall": (225.0, 7.0, 2.0),
        "pocket": (4.0, 1.0, 1.5),
    }[kind]
    wall = _surface(level, texture, seed)
    frames = []
    for i in range(n):
        view = _shaky(wall, i, rng, amp=3.0 if kind in ("covered", "pocket") else 6.0)
        gain = 1.0
        if kind == "pocket" and rng.random() < 0.03:  # light leaks through the fabric
            gain = float(rng.uniform(3.0, 8.0))
        frames.append(_finish(view, gain, rng, noise, 80))
    return Sequence(name=name, frames=frames, ego_motion=True)


def turn_sequence(name: str, photo: Path, *, seconds: float, seed: int) -> Sequence:
    """A walk that turns the phone from landscape to portrait halfway: the first
    portrait frame is an event (a new view to look at)."""
    base = _world(photo)
    cam = WalkingCamera(seed, base.size)
    rng = np.random.default_rng(seed + 1)
    n = round(seconds * FPS)
    turn = n // 2
    frames = []
    for i in range(n):
        jpeg = render(base, cam.pose(i), rng)
        if i >= turn:
            img = Image.open(io.BytesIO(jpeg)).rotate(90, expand=True)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
            jpeg = buf.getvalue()
        frames.append(jpeg)
    return Sequence(name=name, frames=frames, events=[Event(frame=turn, kind="scene-cut")])


def glitch_sequence(name: str, photo: Path, *, seconds: float, seed: int) -> Sequence:
    """A walk with one black frame in the middle (a camera glitch): no event."""
    seq = walking_sequence(name, photo, seconds=seconds, seed=seed)
    black = Image.new("RGB", VIEW, (0, 0, 0))
    buf = io.BytesIO()
    black.save(buf, format="JPEG", quality=80)
    seq.frames[len(seq.frames) // 2] = buf.getvalue()
    return seq


def _entry_offset(side: str, i: int, start: int, step: int, patch: Image.Image) -> tuple[int, int]:
    """Top-left corner, in view coordinates, of ``patch`` entering the view from
    ``side`` by ``step`` pixels a frame, ``step`` pixels inside on frame ``start``."""
    inside = (i - start + 1) * step
    w, h = VIEW
    if side == "left":
        return inside - patch.width, 120
    if side == "right":
        return w - inside, 120
    if side == "top":
        return 250, inside - patch.height
    if side == "bottom":
        return 250, h - inside
    raise ValueError(side)


def entry_event_frame(start: int, step: int) -> int:
    """First frame on which 5% of the frame width is inside the view (the patch is
    ``step`` pixels inside on ``start`` and ``step`` more on each frame after)."""
    need = round(0.05 * VIEW[0])
    return start + (need + step - 1) // step - 1


def edge_entry_sequence(
    name: str, photo: Path, props: Path, *, seconds: float, seed: int, side: str
) -> Sequence:
    """A still view; a person-sized object walks in from ``side`` at 16 px a frame
    (about 1.5 m/s at a few metres). The event is when 5% of the frame width is inside."""
    rng = np.random.default_rng(seed)
    base = _world(photo).resize((VIEW[0] + 80, VIEW[1] + 60))
    person = _entry_patch(props, side)
    n = round(seconds * FPS)
    start = round(n * 0.4)
    step = 16
    frames = []
    for i in range(n):
        world = base.copy()
        if i >= start:
            x, y = _entry_offset(side, i, start, step, person)
            world.paste(person, (40 + x, 30 + y))
        frames.append(_finish(_shaky(world, i, rng, amp=1.0), 1.0, rng, 2.0, 80))
    event = Event(frame=entry_event_frame(start, step), kind="appear")
    return Sequence(name=name, frames=frames, events=[event], ego_motion=False)


def _entry_patch(props: Path, side: str) -> Image.Image:
    src = Image.open(props).convert("RGB")
    person = _object_patch(src, (200, 60, 380, 420))
    if side in ("left", "right"):
        return person.resize((150, 330))
    return person.resize((220, 200))  # from above or below: something wide, not tall


def walking_entry_sequence(
    name: str, photo: Path, props: Path, *, seconds: float, seed: int, side: str
) -> Sequence:
    """A walk (pan, bob, roll, zoom, exposure) while something enters the view from
    ``side`` at 16 px a frame, moving across the view on its own (a person crossing,
    a dog at the feet); the event is when 5% of the frame width is inside."""
    base = _world(photo)
    cam = WalkingCamera(seed, base.size)
    rng = np.random.default_rng(seed + 1)
    patch = _entry_patch(props, side)
    n = round(seconds * FPS)
    start = round(n * 0.55)
    step = 16
    frames = []
    for i in range(n):
        pose = cam.pose(i)
        view = view_of(base, pose)
        if i >= start:
            view.paste(patch, _entry_offset(side, i, start, step, patch))
        frames.append(_finish(view, pose[4], rng, 3.0, 75))
    event = Event(frame=entry_event_frame(start, step), kind="appear")
    return Sequence(name=name, frames=frames, events=[event])


def world_sequences(data: Path, *, seconds: float = 30.0, seed: int = 0) -> list[Sequence]:
    """What real use adds: nothing to see, a turned phone, a glitch, edge entries."""
    img = data / "images"
    seqs = [
        nothing_to_see_sequence(f"blind-{kind}", seconds=seconds, seed=seed + 40 + k, kind=kind)
        for k, kind in enumerate(["covered", "dark-room", "plain-wall", "textured-wall", "pocket"])
    ]
    seqs += [
        grain_sequence(f"grain-level-{level}", seconds=seconds, seed=seed + 60 + k, level=level)
        for k, level in enumerate([3, 8, 40, 150])
    ]
    seqs.append(turn_sequence("walk-turned", img / "leuvenA.jpg", seconds=seconds, seed=seed + 50))
    seqs.append(
        glitch_sequence("walk-glitch", img / "building.jpg", seconds=seconds, seed=seed + 51)
    )
    for k, side in enumerate(["left", "right"]):
        seqs.append(
            edge_entry_sequence(
                f"enter-from-{side}",
                img / "building.jpg",
                img / "stuff.jpg",
                seconds=min(seconds, 15.0),
                seed=seed + 52 + k,
                side=side,
            )
        )
    photos = ["leuvenA.jpg", "home.jpg", "building.jpg", "stuff.jpg"]
    for k, side in enumerate(["left", "right", "top", "bottom"]):
        seqs.append(
            walking_entry_sequence(
                f"walk-enter-from-{side}",
                img / photos[k],
                img / "stuff.jpg",
                seconds=min(seconds, 15.0),
                seed=seed + 70 + k,
                side=side,
            )
        )
    return seqs
