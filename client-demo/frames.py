"""Frame sources for the replay client: a video file or a folder of images.

Frames come out as JPEG bytes with their long side at most 640 (by default) and
their own shape, as the phone page sends them: a portrait video stays portrait.
Video decoding needs OpenCV (``pip install 'seealoud[replay]'``); image folders
need only Pillow.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class FrameSourceError(Exception):
    """The source cannot be read; the message says why and what to install."""


@dataclass(kw_only=True, repr=False)
class EncodedFrame:
    """One frame ready to send."""

    jpeg: bytes
    width: int
    height: int

    def __repr__(self) -> str:
        return f"EncodedFrame({self.width}x{self.height}, {len(self.jpeg)} bytes)"


def encode_jpeg(
    image: Image.Image,
    *,
    size: tuple[int, int] | None = None,
    long_side: int | None = None,
    quality: int,
) -> EncodedFrame:
    """Resize and encode. ``size``: exactly that size (a fixed test view);
    ``long_side``: scaled down, keeping the shape, until the longer side is at most
    that (what a phone sends: stretching a portrait camera to 640x480 hid the turn
    from the detector). Neither: as it is."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if size is None and long_side is not None and max(image.size) > long_side:
        w, h = image.size
        k = long_side / max(w, h)
        size = (max(1, round(w * k)), max(1, round(h * k)))
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return EncodedFrame(jpeg=buf.getvalue(), width=image.width, height=image.height)


def video_fps(path: Path) -> float:
    """The frame rate a video file declares (10 if it declares none)."""
    cv2 = require_cv2()
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    return fps if 0 < fps < 240 else 10.0


def iter_images(source: Path) -> Iterator[Image.Image]:
    """Decoded frames, in order, from a video file or an image folder."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FrameSourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
        for file in files:
            yield _still(file)
        return
    if not source.exists():
        raise FrameSourceError(f"{source} does not exist")
    if source.suffix.lower() in IMAGE_SUFFIXES:
        yield _still(source)
        return
    cv2 = require_cv2()
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise FrameSourceError(f"cannot open video {source}")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield Image.fromarray(bgr[:, :, ::-1])
    finally:
        cap.release()


def _still(path: Path) -> Image.Image:
    """One photo, upright as the phone held it (its EXIF orientation applied: the
    re-encoded frame carries no EXIF, so a photo stored sideways was sent sideways),
    in RGB. A file Pillow cannot read, or one too large for it, is a
    ``FrameSourceError`` naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FrameSourceError(f"cannot read {path.name}: {exc}") from exc


def require_cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise FrameSourceError(
            "reading video, cameras and streams needs OpenCV: pip install 'seealoud[replay]'"
        ) from exc
    return cv2
