"""Signs and pages rendered in code, with their exact text, for the text benchmark and tests.

A rendered sign is ground truth by construction: the words drawn are the words
the reader must return. The scenes vary what makes reading hard on a phone:
font, size, colours, a textured background, perspective (the sign seen from
the side), rotation of the whole page and blur (a moving or defocused camera).

Fonts come from the machine (Debian ``fonts-dejavu-core``, ``fonts-liberation2``,
``fonts-noto-cjk``); :func:`find_font` returns ``None`` when one is missing so
callers can skip with a reason.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FRAME = (640, 480)
"""The phone frame size the server sees (width, height)."""

FONT_NAMES = {
    "sans": "DejaVu Sans:style=Book",
    "sans-bold": "DejaVu Sans:style=Bold",
    "serif": "DejaVu Serif:style=Book",
    "liberation-sans": "Liberation Sans:style=Regular",
    "liberation-serif": "Liberation Serif:style=Regular",
    "mono": "DejaVu Sans Mono:style=Book",
    "cjk": "Noto Sans CJK SC:style=Regular",
    "cjk-serif": "Noto Serif CJK SC:style=Regular",
}
"""Short names of the fonts the scenes use, and their fontconfig patterns."""


@cache
def find_font(name: str) -> Path | None:
    """Path of the font named in :data:`FONT_NAMES`, or ``None`` if not installed."""
    pattern = FONT_NAMES[name]
    if shutil.which("fc-match") is None:
        return None
    try:
        out = subprocess.run(
            ["fc-match", "--format=%{file}\n%{family}", pattern],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    path, _, family = out.partition("\n")
    wanted = pattern.split(":", 1)[0]
    # fc-match always answers with something; only accept the family asked for.
    if wanted.lower() not in family.lower() or not Path(path).is_file():
        return None
    return Path(path)


@dataclass(kw_only=True)
class SignScene:
    """One rendered scene and how it was made.

    Attributes:
        name: Short label for tables.
        lines: The sign's text, one string per printed line (the ground truth).
        font: A key of :data:`FONT_NAMES`.
        size: Font size in pixels on the sign before perspective.
        fg: Text colour.
        bg: Sign plate colour.
        background: ``"plain"``, ``"texture"`` (noisy wall) or ``"gradient"``.
        perspective: 0 for a frontal sign; up to ~0.3 for a sign seen from the side.
        blur: Gaussian blur radius in pixels applied to the whole frame.
        rotate: Whole-frame rotation in degrees counter-clockwise (0, 90, 180, 270).
        centre: Centre of the sign in the frame, as fractions of width and height.
        language: ``"en"`` or ``"zh"``.
        kind: ``"clean"``, ``"hard"``, ``"blurred"`` (must be refused) or ``"cut"``
            (runs off the edge the name ends with).
    """

    name: str
    lines: list[str]
    font: str = "sans"
    size: int = 40
    fg: tuple[int, int, int] = (20, 20, 20)
    bg: tuple[int, int, int] = (245, 245, 235)
    background: str = "plain"
    perspective: float = 0.0
    blur: float = 0.0
    rotate: int = 0
    centre: tuple[float, float] = (0.5, 0.5)
    language: str = "en"
    kind: str = "clean"

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _background(kind: str, seed: int) -> Image.Image:
    w, h = FRAME
    rng = np.random.default_rng(seed)
    if kind == "texture":
        base = rng.normal(110, 18, size=(h // 4, w // 4, 3)).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(base).resize(FRAME, Image.Resampling.BICUBIC)
        noise = rng.normal(0, 6, size=(h, w, 3))
        return Image.fromarray(
            (np.asarray(img, dtype=np.float64) + noise).clip(0, 255).astype(np.uint8)
        )
    if kind == "gradient":
        ramp = np.linspace(60, 190, w)[None, :, None] * np.ones((h, 1, 3))
        ramp[..., 2] = ramp[..., 2] * 0.8 + 30
        return Image.fromarray(ramp.clip(0, 255).astype(np.uint8))
    return Image.new("RGB", FRAME, (128, 132, 128))


def _plate(scene: SignScene) -> Image.Image:
    path = find_font(scene.font)
    if path is None:
        raise FileNotFoundError(f"font {scene.font!r} ({FONT_NAMES[scene.font]}) is not installed")
    font = ImageFont.truetype(str(path), scene.size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [
        tuple(round(v) for v in probe.textbbox((0, 0), line, font=font)) for line in scene.lines
    ]
    gap = scene.size // 3
    pad = scene.size // 2
    width = max(b[2] - b[0] for b in boxes) + 2 * pad
    height = sum(b[3] - b[1] for b in boxes) + gap * (len(boxes) - 1) + 2 * pad
    plate = Image.new("RGB", (width, height), scene.bg)
    draw = ImageDraw.Draw(plate)
    y = pad
    for line, box in zip(scene.lines, boxes, strict=True):
        x = (width - (box[2] - box[0])) // 2
        draw.text((x - box[0], y - box[1]), line, font=font, fill=scene.fg)
        y += box[3] - box[1] + gap
    return plate


def _perspective_coeffs(
    src: list[tuple[float, float]], dst: list[tuple[float, float]]
) -> list[float]:
    """Coefficients for ``Image.transform(PERSPECTIVE)`` mapping output ``dst`` to input ``src``."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.array(rows, dtype=np.float64)
    b = np.array([c for point in src for c in point], dtype=np.float64)
    return [float(c) for c in np.linalg.solve(a, b)]


def render(scene: SignScene, *, seed: int = 0) -> Image.Image:
    """The scene as a 640x480 RGB frame (before rotation, which may swap the sides)."""
    frame = _background(scene.background, seed)
    plate = _plate(scene)
    pw, ph = plate.size
    w, h = FRAME
    if pw > w - 20 or ph > h - 20:
        scale = min((w - 20) / pw, (h - 20) / ph)
        plate = plate.resize((int(pw * scale), int(ph * scale)), Image.Resampling.LANCZOS)
        pw, ph = plate.size
    mask = Image.new("L", plate.size, 255)
    if scene.perspective:
        # The right edge recedes: shorter and a little narrower, as seen from the left.
        p = scene.perspective
        dst = [
            (0.0, 0.0),
            (pw * (1 - p / 2), ph * p / 2),
            (pw * (1 - p / 2), ph * (1 - p / 2)),
            (0.0, ph),
        ]
        src = [(0.0, 0.0), (pw, 0.0), (pw, ph), (0.0, ph)]
        coeffs = _perspective_coeffs(src, dst)
        plate = plate.transform(
            plate.size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC
        )
        mask = mask.transform(
            mask.size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC
        )
    cx, cy = scene.centre
    x = int(cx * w - pw / 2)
    y = int(cy * h - ph / 2)
    frame.paste(plate, (x, y), mask)
    if scene.blur:
        frame = frame.filter(ImageFilter.GaussianBlur(scene.blur))
    if scene.rotate:
        frame = frame.rotate(scene.rotate, expand=True)
    return frame


def page_scene(*, rotate: int = 0) -> SignScene:
    """A short printed page of several lines, for reading order and rotation."""
    return SignScene(
        name=f"page-rot{rotate}",
        lines=[
            "Take one tablet twice a day.",
            "Do not exceed the stated dose.",
            "Keep out of reach of children.",
        ],
        font="serif",
        size=26,
        bg=(255, 255, 255),
        rotate=rotate,
    )


def scenes() -> list[SignScene]:
    """The benchmark's rendered scenes: clean signs, harder signs and blurred signs."""
    clean = [
        SignScene(
            name="exit",
            lines=["EXIT"],
            font="sans-bold",
            size=72,
            fg=(255, 255, 255),
            bg=(0, 120, 60),
        ),
        SignScene(
            name="platform", lines=["Platform 4", "Trains to Cambridge"], font="sans", size=40
        ),
        SignScene(
            name="toilets",
            lines=["Toilets", "Lift to all floors"],
            font="liberation-sans",
            size=36,
            fg=(255, 255, 255),
            bg=(20, 40, 120),
            centre=(0.4, 0.4),
        ),
        SignScene(
            name="pharmacy", lines=["Pharmacy open until 9 pm"], font="liberation-serif", size=34
        ),
        SignScene(
            name="wet-floor",
            lines=["CAUTION", "Wet floor"],
            font="sans-bold",
            size=48,
            fg=(10, 10, 10),
            bg=(250, 210, 0),
        ),
        SignScene(
            name="room", lines=["Room 214", "Dr. Patel"], font="mono", size=38, centre=(0.6, 0.55)
        ),
        SignScene(
            name="zh-exit",
            lines=["出口"],
            font="cjk",
            size=72,
            fg=(255, 255, 255),
            bg=(0, 120, 60),
            language="zh",
        ),
        SignScene(
            name="zh-station",
            lines=["地铁站入口", "请小心台阶"],
            font="cjk",
            size=44,
            language="zh",
        ),
        SignScene(
            name="zh-pharmacy",
            lines=["药店营业时间", "上午九点到晚上十点"],
            font="cjk-serif",
            size=36,
            language="zh",
        ),
        page_scene(),
    ]
    hard = [
        SignScene(name="small", lines=["Bus stop 12 minutes"], font="sans", size=20),
        SignScene(
            name="perspective",
            lines=["Main entrance", "Reception"],
            font="sans",
            size=44,
            perspective=0.3,
        ),
        SignScene(
            name="texture",
            lines=["No parking"],
            font="sans-bold",
            size=44,
            background="texture",
            centre=(0.35, 0.6),
        ),
        SignScene(
            name="gradient",
            lines=["Ticket office"],
            font="serif",
            size=40,
            background="gradient",
            bg=(230, 230, 230),
        ),
        SignScene(name="slight-blur", lines=["Information desk"], font="sans", size=40, blur=1.0),
        SignScene(
            name="zh-perspective",
            lines=["洗手间在二楼"],
            font="cjk",
            size=44,
            perspective=0.25,
            language="zh",
        ),
        page_scene(rotate=90),
        page_scene(rotate=180),
        page_scene(rotate=270),
    ]
    blurred = [
        SignScene(name="blur-exit", lines=["Emergency exit"], font="sans", size=40, blur=7.0),
        SignScene(
            name="blur-platform",
            lines=["Platform 4", "Trains to Cambridge"],
            font="sans",
            size=40,
            blur=6.0,
        ),
        SignScene(
            name="blur-page",
            lines=page_scene().lines,
            font="serif",
            size=26,
            bg=(255, 255, 255),
            blur=4.0,
        ),
        SignScene(
            name="blur-zh",
            lines=["地铁站入口", "请小心台阶"],
            font="cjk",
            size=44,
            blur=6.0,
            language="zh",
        ),
        SignScene(name="blur-small", lines=["Bus stop 12 minutes"], font="sans", size=20, blur=3.0),
    ]
    for scene in hard:
        scene.kind = "hard"
    for scene in blurred:
        scene.kind = "blurred"
    return clean + hard + blurred + cut_scenes()


def cut_scenes() -> list[SignScene]:
    """Signs running off an edge of the frame; ``name`` ends with the edge."""
    return [
        SignScene(
            name="cut-left",
            lines=["Departures and arrivals"],
            font="sans",
            size=44,
            centre=(0.12, 0.5),
            kind="cut",
        ),
        SignScene(
            name="cut-right",
            lines=["Ticket office open daily"],
            font="serif",
            size=44,
            centre=(0.85, 0.3),
            kind="cut",
        ),
        SignScene(
            name="cut-top",
            lines=["Gate 12", "Boarding"],
            font="sans-bold",
            size=56,
            centre=(0.5, 0.1),
            kind="cut",
        ),
    ]
