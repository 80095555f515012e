"""The change detector: decides which camera frames deserve the model.

A walking phone moves all the time, so "the pixels changed" says nothing.
For every JPEG the detector

1. decodes at 1/8 scale (libjpeg-turbo's DCT scaling, a fraction of the cost
   of a full decode; through simplejpeg, or Pillow's ``draft`` mode for frames
   with EXIF or in CMYK) to a small grayscale signature, normalised for exposure
   (zero mean, unit variance), so a brighter or darker frame is the same frame;
2. estimates the global shift between the signature and a reference by phase
   correlation, and compares them on their overlap after undoing it; the
   residual of a pixel is its smallest difference within +-1 pixel, which
   absorbs sub-pixel shake, a little roll and the slow zoom of walking;
3. averages the residual in cells and scores **localised** change (the worst
   cells against the frame's own typical residual): ego-motion leaves a
   diffuse residual, a new object or sign a local one.

Where real use broke the first versions: at the border of the overlap the
search is over the offsets that exist (things walk in from there); where either
frame clips, the two are compared at one exposure (an auto-exposure step turned
white highlights into "new content"); the worst cell is also sought on a grid
offset by half a cell; and in a still view each cell is also measured against
its own recent change, so something new in a quiet part stands out from people
walking elsewhere.

Two references are compared: the previous frame (sudden change: something
enters, a sign comes into view) and the keyframe, the frame the model last
saw (slow change: something approaching). A frame whose shift cannot be
found and whose residual is high everywhere is a scene cut (turned a corner,
entered a room).

Around the scores sits the policy: hysteresis (fire above ``fire_threshold``
for ``persist_frames`` frames, re-arm only below ``rearm_threshold``), a
cooldown (minimum interval between model calls; an event during it is held
and fired when it ends), a heartbeat (maximum interval; ``None`` turns it off,
as quiet mode does) and questions, which always go through. Every decision
carries its reason.
"""

from __future__ import annotations

import functools
import io
import re
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import simplejpeg
from PIL import Image

from vision.upright import upright


class TriggerReason(StrEnum):
    """Why the model is called."""

    NEW_CONTENT = "new-content"
    APPROACH = "approach"
    SCENE_CUT = "scene-cut"
    HEARTBEAT = "heartbeat"
    QUESTION = "question"
    FIRST_FRAME = "first-frame"
    ORIENTATION = "orientation"
    VIEW_RESTORED = "view-restored"


class ChangeDetectorError(ValueError):
    """A frame could not be decoded; the caller should drop it."""


@dataclass(kw_only=True)
class ChangeOptions:
    """Thresholds and timing of the change detector.

    Scores are in units of the frame's own typical residual, so they do not
    depend on image contrast or exposure.

    Attributes:
        signature_width: Width of the grayscale signature (height follows the
            frame's aspect ratio). 80 is 1/8 of 640, what ``draft`` gives.
        cell: Side, in signature pixels, of the cells residuals are averaged in.
        search_radius: Residual = smallest difference within this many pixels,
            to absorb sub-pixel shake, roll and zoom.
        confirm_slack: Against the frame before the previous one (two frames of
            shake), edges can be discounted by the strongest gradient within this
            many pixels. 0: the same 1 px search and weight as from frame to
            frame. A wider search found, somewhere near, a grey that matched a
            faint object (a grey box appearing on a grey facade confirmed at 1.9
            with a 2 px search); a 1 px slack still took in a faint object's own
            outline (a grey object appearing on a walk went unseen for 2 s, a
            grey figure walking in for 900 ms). Over the benchmark's ten seeds:
            9 of 280 events late at 1, 6 at 0; 10% fewer false triggers at 1.
        key_slack: The same against the keyframe (up to a second of drift).
        gradient_floor: Residual is divided by (local gradient + this), so
            misalignment along strong edges counts less than new content.
        fire_threshold: Confirmed local score above which new content fires.
        noise_factor: ... and it must also exceed this many times the 90th
            percentile of recent scores, so a busy, shaky scene needs more. At
            1.8, a small grey object appearing on a shaky walk (2.8 against a
            threshold of 3.4) was looked at only as it grew, after 550 ms to 2 s:
            four of 280 events over the benchmark's ten seeds. At 1.4 all four
            are on time, for more needless looks on walks (1.1 a minute against
            0.55): a late obstacle costs more than a look.
        noise_window: Frames of recent scores the noise level is taken from.
        rearm_threshold: After firing, the score must fall below this before
            new content can fire again (hysteresis).
        approach_threshold: Score against the keyframe (the frame the model
            last saw, at most ``key_refresh_s`` old) on two frames in a row:
            slow change, such as something approaching.
        entry_threshold: Score against the keyframe on two frames in a row that
            fires as new content when it also stands far above the keyframe's own
            noise (``entry_noise_factor`` times): something walking in from an
            edge changes little between two frames but a lot against the keyframe.
        entry_noise_factor: See ``entry_threshold``.
        key_refresh_s: The keyframe is renewed this often when nothing fires,
            so ego-motion does not accumulate against it.
        scene_cut_correlation: Below this normalised correlation with the
            previous frame (after alignment), the view is new.
        max_shift_fraction: A keyframe that has drifted more than this fraction
            of the frame away is replaced silently (panning is not an event).
        shift_tolerance: When the shift to the keyframe differs by more than this
            many pixels from the sum of the frame-to-frame shifts since it, both are
            tried and the better-aligned one is kept.
        cooldown_s: Minimum interval between model calls.
        heartbeat_s: Maximum interval between model calls; ``None`` = no
            heartbeat (quiet mode).
        dark_level: A frame whose mean level (0-255) is below this has too
            little light to analyse (a covered lens, a pocket, a dark room)...
        bright_level: ... unless at least ``bright_fraction`` of it is at this
            level or brighter: a lit exit sign in a dark corridor is worth a look.
        bright_fraction: See ``bright_level``.
        min_texture: A frame whose level varies less than this (standard
            deviation, 0-255) is featureless (a plain wall, the ceiling).
        contrast_floor: Frames are normalised by their contrast, but never by
            less than this: a low-contrast frame's sensor noise is not blown up
            into "change".
        blind_heartbeat_s: While there is nothing to see, the slower heartbeat
            (a phone in a pocket costs almost nothing); a dark frame is never
            sent to the model, even then. ``None``: no look at all.
        still_s: A view whose shift to the two previous frames has been zero for
            this long is still (a phone on a table or a harness, the user
            standing): each cell's change is then also measured against that
            cell's own recent change... A shift of one signature pixel that the
            next frames undo (people crossing pull the phase correlation) pauses
            the still view instead of ending it.
        still_decay: ... which forgets by this factor a frame (0.9: a person who
            crossed that part of the view a second ago no longer counts) ...
        still_floor: ... plus this floor (normalised residual), so sensor noise
            in a part where nothing moves is not an event.
        still_threshold: A confirmed cell change this many times its own recent
            change (plus the floor) fires as new content. 2.5: an object put down
            next to people crossing a square scored 2.6 and waited 900 ms at 3.
        exposure_step: A change of the median grey level by more than this
            (natural log of the ratio: 0.14 is 15 %) from both previous frames, and
            by 8 levels at least, is an exposure step: that frame's score against
            the previous one does not confirm a change.
        glitch_s: Nothing to see for less than this, then the same view as
            before, is a glitch (a black frame, a finger over the lens): no look,
            and nothing said (``Decision.view_changed`` is set only once nothing
            to see has lasted this long, and on the way back only if it was).
            The view counts as back only after two frames with something in them,
            so a light leak in a pocket is not a view.
    """

    signature_width: int = 80
    cell: int = 8
    search_radius: int = 1
    confirm_slack: int = 0
    key_slack: int = 2
    gradient_floor: float = 1.0
    fire_threshold: float = 2.5
    noise_factor: float = 1.4
    noise_window: int = 50
    rearm_threshold: float = 2.0
    approach_threshold: float = 7.0
    entry_threshold: float = 5.0
    entry_noise_factor: float = 5.0
    key_refresh_s: float = 1.0
    scene_cut_correlation: float = 0.6
    max_shift_fraction: float = 0.35
    shift_tolerance: int = 3
    cooldown_s: float = 0.5
    heartbeat_s: float | None = 10.0
    dark_level: float = 20.0
    bright_level: float = 64.0
    bright_fraction: float = 0.005
    min_texture: float = 4.0
    contrast_floor: float = 16.0
    blind_heartbeat_s: float | None = 30.0
    glitch_s: float = 1.0
    still_s: float = 2.0
    still_decay: float = 0.9
    still_floor: float = 0.04
    still_threshold: float = 2.5
    exposure_step: float = 0.14

    def __post_init__(self) -> None:
        """Values a deployer could set that break the arithmetic (a negative radius, a
        zero gradient floor) are refused here, not met as a crash on the first frame."""
        for name in ("search_radius", "confirm_slack", "key_slack"):
            if not 0 <= getattr(self, name) <= 8:
                raise ValueError(f"ChangeOptions.{name} must be 0-8, not {getattr(self, name)}")
        if not 8 <= self.signature_width <= 320:
            raise ValueError(
                f"ChangeOptions.signature_width must be 8-320, not {self.signature_width}"
            )
        if not 1 <= self.cell <= self.signature_width // 2:
            raise ValueError(
                f"ChangeOptions.cell must be 1-{self.signature_width // 2}, not {self.cell}"
            )
        if not self.gradient_floor > 0 or self.noise_window < 1 or self.cooldown_s < 0:
            raise ValueError(
                "ChangeOptions: gradient_floor > 0, noise_window >= 1, cooldown_s >= 0"
            )


@dataclass(kw_only=True)
class Signature:
    """A frame reduced to what the detector compares: small, normalised grayscale."""

    pixels: np.ndarray
    spectrum: np.ndarray
    """Phase of the windowed signature's spectrum (magnitude divided out)."""
    gradient: np.ndarray
    t: float
    level: float = 128.0
    """Mean grey level (0-255) before normalisation."""
    texture: float = 64.0
    """Standard deviation of the grey level (0-255) before normalisation."""
    scale: float = 1.0
    """What the pixels were divided by: ``pixels * scale + level`` gives grey levels."""
    raw: np.ndarray
    """The grey levels (0-255) before normalisation."""
    clipped: float = 0.0
    """Fraction of the frame at the sensor's ceiling (``CLIP_LEVEL`` or brighter)."""
    tone: float = 128.0
    """Median grey level (of one pixel in 16): the exposure, little moved by content."""
    _padded: dict[int, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _edges: dict[int, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def padded(self, radius: int) -> np.ndarray:
        """The pixels padded by ``radius`` edge pixels on each side (kept: a frame is
        the reference of several comparisons)."""
        out = self._padded.get(radius)
        if out is None:
            out = pad_edges(self.pixels, radius)
            self._padded[radius] = out
        return out

    def edges(self, slack: int) -> np.ndarray:
        """The gradient, each pixel raised to the strongest within ``slack`` pixels
        (kept: a frame is compared as the one before the previous, then as the
        keyframe)."""
        if slack == 0:
            return self.gradient
        out = self._edges.get(slack)
        if out is None:
            out = max_filter(self.gradient, slack)
            self._edges[slack] = out
        return out

    def __repr__(self) -> str:
        h, w = self.pixels.shape
        return f"Signature({w}x{h}, t={self.t:.3f})"


@dataclass(kw_only=True)
class FrameScores:
    """What the detector measured on one frame."""

    local_prev: float = 0.0
    confirmed: float = 0.0
    noise: float = 1.0
    local_key: float = 0.0
    key_noise: float = 1.0
    correlation: float = 1.0
    shift: tuple[int, int] = (0, 0)
    key_shift: tuple[int, int] = (0, 0)
    changed_cells: int = 0
    still: float = 0.0


@dataclass(kw_only=True)
class Decision:
    """The detector's verdict on one frame: call the model or not, and why."""

    fire: bool
    reason: TriggerReason | None = None
    scores: FrameScores = field(default_factory=FrameScores)
    held: bool = False
    """A change was seen but the cooldown holds it back; it fires when the cooldown ends."""
    view: str = "ok"
    """``ok``, or ``nothing-to-see`` (too little light or texture to analyse)."""
    view_reason: str | None = None
    """While nothing to see: ``dark`` or ``featureless``."""
    view_changed: bool = False
    """The view to tell the user about changed: set once nothing to see has lasted
    ``glitch_s`` (not for a glitch), and when the view comes back after that."""


def signature_from_jpeg(
    data: bytes, *, width: int = 80, t: float = 0.0, contrast_floor: float = 8.0
) -> Signature:
    """Decode a JPEG at reduced scale into a normalised signature.

    Any JPEG Pillow reads is accepted: greyscale, CMYK, progressive, any size and
    aspect ratio (the signature's height is kept between 8 and 4x its width), with
    the EXIF orientation a phone may set applied. Anything else raises
    ``ChangeDetectorError`` with Pillow's own reason.
    """
    small = _decode_eighth(data)
    if small is None:
        try:
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            img.draft("L", (max(1, w // 8), max(1, h // 8)))
            img.load()
            gray = upright(img, img if img.mode == "L" else img.convert("L"))
        except Exception as exc:  # Pillow raises many types on corrupt data
            # Pillow names the buffer it read, with its heap address: not for a client
            reason = re.sub(r" ?<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc))
            raise ChangeDetectorError(
                f"cannot decode frame: {type(exc).__name__}: {reason}"
            ) from exc
    else:
        gray = Image.fromarray(small)
    w, h = gray.size
    if w < 1 or h < 1:
        raise ChangeDetectorError(f"cannot decode frame: empty image {w}x{h}")
    height = min(4 * width, max(8, round(width * h / w)))
    if gray.size != (width, height):
        gray = gray.resize((width, height), Image.Resampling.BILINEAR)
    elif small is not None:
        return signature_from_array(small, t=t, contrast_floor=contrast_floor)
    # from the raw bytes: half the cost of numpy's array interface on a PIL image
    levels = np.frombuffer(gray.tobytes(), dtype=np.uint8).reshape(height, width)
    return signature_from_array(levels, t=t, contrast_floor=contrast_floor)


_EXIF = b"Exif\x00\x00"
"""How an EXIF segment starts (Pillow reads the orientation from it)."""


def _decode_eighth(data: bytes) -> np.ndarray | None:
    """The frame's grey levels at 1/8 scale, decoded by libjpeg-turbo directly
    (simplejpeg): the same pixels as Pillow's ``draft`` decode, in about 0.6 of the
    time (Pillow reads the headers in Python and feeds the decoder through its
    file layer). ``None`` where Pillow must decode it: a frame with EXIF (Pillow
    applies its orientation), CMYK or YCCK (Pillow's conversion to grey differs by
    a level or two), one under 8 px a side, one over Pillow's decompression-bomb
    limit, or one this decoder refuses (Pillow then decodes it or gives its own
    reason)."""
    if _EXIF in data:
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        # under 8 px a side Pillow's draft does not scale by 8 (a 7x7 frame is 2x2)
        if colorspace not in ("Gray", "YCbCr") or w < 8 or h < 8:
            return None
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and w * h > limit:
            return None
        out = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_height=h // 8, min_width=w // 8)
    except Exception:  # any refusal: Pillow decides, and gives the reason
        return None
    return out.reshape(out.shape[0], out.shape[1])


def signature_from_array(
    gray: np.ndarray, *, t: float = 0.0, contrast_floor: float = 8.0
) -> Signature:
    """Normalise a small grayscale array (exposure: zero mean, unit variance).

    No blur: the 1/8-scale decode already averages away sensor noise, and a
    blur would also erase the strokes of text that comes into view. The contrast
    divided by is never below ``contrast_floor``, so a flat frame stays flat.
    """
    raw = gray.astype(np.float32)
    level = float(raw.sum()) / raw.size
    pixels = raw - level
    texture = float(np.sqrt(np.dot(pixels.ravel(), pixels.ravel()) / pixels.size))
    scale = max(texture, contrast_floor) + 1.0
    pixels /= scale
    gy, gx = _gradient(pixels)
    np.abs(gy, out=gy)
    gy += np.abs(gx, out=gx)
    spectrum = _windowed_spectrum(pixels)
    spectrum /= np.abs(spectrum) + 1e-6  # phase only: what phase correlation uses
    return Signature(
        pixels=pixels,
        spectrum=spectrum,
        gradient=gy,
        t=t,
        level=level,
        texture=texture,
        scale=scale,
        raw=raw,
        clipped=float(np.count_nonzero(raw >= CLIP_LEVEL)) / raw.size,
        tone=_median(raw[::4, ::4]),
    )


def _median(a: np.ndarray, *, exact: bool = False) -> float:
    """The median of ``a`` by one partition: ``np.median`` costs more to set up than
    this does to compute, at a few hundred values. Not ``exact``: the upper median
    (of an even count)."""
    flat = a.ravel()
    n = flat.size
    k = n // 2
    if not exact or n % 2:
        return float(np.partition(flat, k)[k])
    low, high = np.partition(flat, (k - 1, k))[k - 1 : k + 1]
    return (float(low) + float(high)) / 2


CLIP_LEVEL = 248.0
"""Grey level (of the 1/8-scale decode) from which a pixel counts as clipped."""


def in_one_tone(
    ref: Signature, cur: Signature, dy: int, dx: int, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two frames' pixels and the reference's edge weight (``weight``: its
    gradient unless given) in the same units.

    Normalising each frame by its own mean and contrast makes a change of
    exposure invisible, except where the brighter frame is clipped: there the
    highlights are flat in one frame and not in the other, which looked like new
    content at every auto-exposure step. When either frame has clipped pixels and
    their light differs, the gain between them is measured on the pixels neither
    clips, the darker frame is brought to the brighter one's exposure with the
    same ceiling, and both are normalised alike.
    """
    edges = ref.gradient if weight is None else weight
    plain = ref.pixels, cur.pixels, edges
    if not (ref.clipped or cur.clipped):
        return plain
    if abs(cur.level - ref.level) < 2.0:
        return plain
    h, w = cur.pixels.shape
    y0, y1 = max(0, dy), min(h, h + dy)
    x0, x1 = max(0, dx), min(w, w + dx)
    if y1 - y0 < 8 or x1 - x0 < 8:  # too little overlap to measure a gain on
        return plain
    c = cur.raw[y0:y1:4, x0:x1:4]  # one pixel in 16 is plenty for one number
    r = ref.raw[y0 - dy : y1 - dy : 4, x0 - dx : x1 - dx : 4]
    both = (np.minimum(c, r) > 16) & (np.maximum(c, r) < 240)
    if np.count_nonzero(both) < 0.2 * both.size:
        return plain
    gain = _median(c[both] / r[both], exact=True)
    if abs(gain - 1.0) < 0.03:
        return plain
    if gain > 1.0:  # the reference as the current exposure would have seen it
        ceiling = float(cur.raw.max()) if cur.clipped else 255.0
        toned = np.minimum(ref.raw * gain, ceiling)
        toned -= cur.level
        toned /= cur.scale
        return toned, cur.pixels, edges * (ref.scale * gain / cur.scale)
    ceiling = float(ref.raw.max()) if ref.clipped else 255.0
    toned = np.minimum(cur.raw / gain, ceiling)
    toned -= ref.level
    toned /= ref.scale
    return ref.pixels, toned, edges


def pad_edges(a: np.ndarray, m: int) -> np.ndarray:
    """``np.pad(a, m, mode="edge")`` without its generic set-up (most of its cost
    at 80x60)."""
    if m == 0:
        return a
    h, w = a.shape
    out = np.empty((h + 2 * m, w + 2 * m), dtype=a.dtype)
    out[m:-m, m:-m] = a
    out[:m, m:-m] = a[0]
    out[-m:, m:-m] = a[-1]
    out[:, :m] = out[:, m : m + 1]
    out[:, -m:] = out[:, -m - 1 : -m]
    return out


def max_filter(a: np.ndarray, r: int) -> np.ndarray:
    """The largest value of ``a`` within ``r`` pixels (a square), edges repeated:
    one pass along each axis."""
    h, w = a.shape
    p = pad_edges(a, r)
    rows = p[:h, :].copy()
    for k in range(1, 2 * r + 1):
        np.maximum(rows, p[k : k + h, :], out=rows)
    out = rows[:, :w].copy()
    for k in range(1, 2 * r + 1):
        np.maximum(out, rows[:, k : k + w], out=out)
    return out


def _gradient(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.gradient`` of a 2-D array (central differences, one-sided at the edges),
    without its generic set-up, which costs more than the arithmetic at 80x60."""
    h, w = f.shape
    gy = np.empty_like(f)
    gx = np.empty_like(f)
    if h > 1:
        np.subtract(f[2:], f[:-2], out=gy[1:-1])
        gy[1:-1] *= 0.5
        np.subtract(f[1], f[0], out=gy[0])
        np.subtract(f[-1], f[-2], out=gy[-1])
    else:
        gy[:] = 0.0
    if w > 1:
        np.subtract(f[:, 2:], f[:, :-2], out=gx[:, 1:-1])
        gx[:, 1:-1] *= 0.5
        np.subtract(f[:, 1], f[:, 0], out=gx[:, 0])
        np.subtract(f[:, -1], f[:, -2], out=gx[:, -1])
    else:
        gx[:] = 0.0
    return gy, gx


SHAPES_KEPT = 8
"""Signature shapes whose transform matrices are kept (a phone gives one or two;
at most 1.7 MB each, so a client sending a new size every frame cannot grow the
server's memory)."""


@functools.lru_cache(maxsize=SHAPES_KEPT)
def _dft(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The matrices of a Hann-windowed 2-D real DFT of an ``h`` x ``w`` array and
    of its inverse, kept for the last ``SHAPES_KEPT`` shapes (read-only: shared).

    At 80x60 the FFT's arithmetic is a few microseconds and its set-up, per call,
    about ten: as matrix products (one real and one complex BLAS call each way) the
    same transforms cost half. Real and imaginary parts are interleaved along the
    axis a real product runs over, so a real product's output *is* the complex
    array (``view``), with no copy. The separable Hann window is folded into the
    forward matrices."""
    m = w // 2 + 1
    k, x = np.arange(m), np.arange(w)
    cols = np.exp(-2j * np.pi * np.outer(x, k) / w) * np.hanning(w)[:, None]
    fwd_cols = np.empty((w, 2 * m), dtype=np.float32)
    fwd_cols[:, 0::2], fwd_cols[:, 1::2] = cols.real, cols.imag
    y = np.arange(h)
    fwd_rows = (np.exp(-2j * np.pi * np.outer(y, y) / h) * np.hanning(h)[None, :]).astype(
        np.complex64
    )
    inv_rows = (np.exp(2j * np.pi * np.outer(y, y) / h) / h).astype(np.complex64)
    # irfft along a row: DC and (even w) Nyquist once, the other bins twice, and
    # their imaginary parts ignored (sin 0 = sin(pi n) = 0 does that).
    twice = np.full(m, 2.0)
    twice[0] = 1.0
    if w % 2 == 0:
        twice[-1] = 1.0
    angle = 2 * np.pi * np.outer(k, x) / w
    inv_cols = np.empty((2 * m, w), dtype=np.float32)
    inv_cols[0::2] = twice[:, None] * np.cos(angle) / w
    inv_cols[1::2] = -twice[:, None] * np.sin(angle) / w
    out = (fwd_cols, fwd_rows, inv_rows, inv_cols)
    for a in out:
        a.setflags(write=False)
    return out


def _windowed_spectrum(pixels: np.ndarray) -> np.ndarray:
    """``np.fft.rfft2(pixels * hann)`` (complex64, ``h`` x ``w // 2 + 1``)."""
    h, w = pixels.shape
    fwd_cols, fwd_rows, _, _ = _dft(h, w)
    half = (pixels.astype(np.float32, copy=False) @ fwd_cols).view(np.complex64)
    return fwd_rows @ half


def estimate_shift(a: Signature, b: Signature) -> tuple[int, int, float]:
    """Integer (dy, dx) that best maps ``a`` onto ``b``, and the peak's strength."""
    return estimate_shifts([a], b)[0]


def estimate_shifts(refs: list[Signature], b: Signature) -> list[tuple[int, int, float]]:
    """``estimate_shift`` from each of ``refs`` (all shaped like ``b``) onto ``b``, with
    one inverse transform for all of them (the same numbers, less set-up)."""
    h, w = b.pixels.shape
    _, _, inv_rows, inv_cols = _dft(h, w)
    m = w // 2 + 1
    n = len(refs)
    # the cross-power spectra side by side, so the inverse is one product each way
    cross = np.empty((h, n, m), dtype=np.complex64)
    for j, a in enumerate(refs):
        np.multiply(b.spectrum, np.conj(a.spectrum), out=cross[:, j])  # phase only
    rows = inv_rows @ cross.reshape(h, n * m)
    surfaces = (rows.view(np.float32).reshape(h * n, 2 * m) @ inv_cols).reshape(h, n, w)
    surfaces = surfaces.transpose(1, 0, 2).reshape(n, h * w)
    peaks = surfaces.argmax(axis=1)
    out = []
    for j, index in enumerate(peaks.tolist()):
        dy, dx = divmod(index, w)
        if dy > h // 2:
            dy -= h
        if dx > w // 2:
            dx -= w
        out.append((dy, dx, float(surfaces[j, index])))
    return out


def aligned_residual(
    ref: np.ndarray,
    cur: np.ndarray,
    dy: int,
    dx: int,
    radius: int,
    *,
    correlate: bool = True,
    weight: np.ndarray | None = None,
    floor: float = 1.0,
    padded: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Per-pixel residual on the overlap after undoing the shift, and the correlation.

    With ``weight`` (an array the shape of ``ref``, such as its gradient), the
    residual is divided by ``weight + floor`` taken at the matching reference pixel.
    ``padded``: ``ref`` already padded by ``radius`` (``pad_edges``). Outside the
    overlap the residual is zero. All the offsets are stacked and
    reduced in one call each: at 80x60 the cost is in the number of numpy calls.
    """
    h, w = cur.shape
    m = radius
    y0, y1 = max(0, dy), min(h, h + dy)
    x0, x1 = max(0, dx), min(w, w + dx)
    full = np.zeros_like(cur)
    if y1 - y0 < 8 or x1 - x0 < 8:
        return full, 0.0
    c = cur[y0:y1, x0:x1]
    # The reference padded by its edge pixels: at the border of the overlap the
    # search is over the offsets that exist, not the border thrown away (where
    # things walk in from).
    if padded is None:
        padded = pad_edges(ref, m)
    ry0, rx0 = y0 - dy, x0 - dx
    oh, ow = y1 - y0, x1 - x0
    side = 2 * m + 1
    stack = np.empty((side * side, oh, ow), dtype=cur.dtype)
    k = 0
    for ry in range(side):
        rows = padded[ry0 + ry : ry0 + ry + oh]
        for rx in range(side):
            stack[k] = rows[:, rx0 + rx : rx0 + rx + ow]
            k += 1
    stack -= c
    np.abs(stack, out=stack)
    best = full[y0:y1, x0:x1]
    np.minimum.reduce(stack, axis=0, out=best)
    if weight is not None:
        best /= weight[ry0 : y1 - dy, rx0 : x1 - dx] + floor
    if not correlate:
        return full, 1.0
    r0 = ref[ry0 : y1 - dy, rx0 : x1 - dx]
    n = c.size
    # contiguous copies (vdot is then one BLAS call); sum / n: less set-up than mean
    cc, rr = c - float(c.sum()) / n, r0 - float(r0.sum()) / n
    corr = float(np.vdot(cc, rr) / (np.sqrt(np.vdot(cc, cc) * np.vdot(rr, rr)) + 1e-6))
    return full, corr


def cell_means(residual: np.ndarray, cell: int) -> np.ndarray | None:
    """The residual averaged in ``cell`` x ``cell`` cells (None: fewer than 2x2 cells)."""
    grids = _cell_grids(residual, cell)
    return None if grids is None else grids[0]


def _cell_grids(residual: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The cell means on the grid from the corner and on the grid offset by half a
    cell (None where it has fewer than 2x2 cells; None for both: the first has).

    Both grids come from one pair of small matrix products (rows, then columns, by
    matrices of 0 and 1/cell, the two grids' stacked): two BLAS calls in all, where
    a reshape and sum per grid first copies the array."""
    h, w = residual.shape
    rows, cols, ch, cw = _cell_matrices(h, w, cell, residual.dtype)
    if rows is None:
        return None
    both = rows @ residual @ cols
    if both.shape[0] - ch < 2 or both.shape[1] - cw < 2:
        return both[:ch, :cw], None
    return both[:ch, :cw], both[ch:, cw:]


@functools.lru_cache(maxsize=4 * SHAPES_KEPT)
def _cell_matrices(
    h: int, w: int, cell: int, dtype: np.dtype
) -> tuple[np.ndarray | None, np.ndarray, int, int]:
    """``rows`` (cells x h) and ``cols`` (w x cells) that average ``cell`` pixels into
    one, for the grid from 0 then the grid from ``cell // 2``; pixels outside whole
    cells get weight 0. Kept for the last few shapes (read-only: shared). ``rows`` is
    None below 2x2 cells."""
    half = cell // 2
    ch, cw = h // cell, w // cell
    starts_y = [*range(0, ch * cell, cell), *range(half, h - cell + 1, cell)]
    starts_x = [*range(0, cw * cell, cell), *range(half, w - cell + 1, cell)]
    rows = np.zeros((len(starts_y), h), dtype=dtype)
    for i, y in enumerate(starts_y):
        rows[i, y : y + cell] = 1.0 / cell
    cols = np.zeros((w, len(starts_x)), dtype=dtype)
    for j, x in enumerate(starts_x):
        cols[x : x + cell, j] = 1.0 / cell
    rows.setflags(write=False)
    cols.setflags(write=False)
    return (rows if ch >= 2 and cw >= 2 else None, cols, ch, cw)


def local_score(residual: np.ndarray, cell: int) -> float:
    """How much the worst cell stands out from the frame's typical cell.

    The worst cell is also looked for on a second grid offset by half a cell: a
    sign or a figure smaller than two cells that straddles a cell border was
    diluted into four cells on one grid, and the last rows of a 60-row
    signature were on no cell at all."""
    grids = _cell_grids(residual, cell)
    if grids is None:
        return 0.0
    cells, offset = grids
    inside = cells[cells > 0]  # cells outside the overlap are all zero
    if inside.size == 0:
        return 0.0
    median = _median(inside, exact=True)
    worst = float(inside.max())
    if offset is not None:
        worst = max(worst, float(offset.max()))
    return worst / (median + 0.05)


def change_score(
    ref: Signature,
    cur: Signature,
    *,
    radius: int,
    cell: int,
    gradient_floor: float,
    correlate: bool = False,
    shift: tuple[int, int] | None = None,
    slack: int = 0,
) -> tuple[float, float, tuple[int, int]]:
    """Localised change of ``cur`` against ``ref`` after undoing the global shift.

    Misalignment (roll, zoom, sub-pixel shake) leaves residual where the image
    has edges, in proportion to their strength; dividing by the local gradient
    (plus ``gradient_floor``) discounts it, while new content stays visible.
    Returns the score, the normalised correlation on the overlap (1.0 unless
    ``correlate``) and the shift. ``shift``: one already estimated between these
    two signatures (the estimate is deterministic, so it is the same). ``slack``:
    the gradient divided by is the strongest within this many pixels
    (``ChangeOptions.confirm_slack``, ``key_slack``).
    """
    dy, dx = shift if shift is not None else estimate_shift(ref, cur)[:2]
    ref_pixels, cur_pixels, weight = in_one_tone(ref, cur, dy, dx, ref.edges(slack))
    residual, corr = aligned_residual(
        ref_pixels,
        cur_pixels,
        dy,
        dx,
        radius,
        correlate=correlate,
        weight=weight,
        floor=gradient_floor,
        padded=ref.padded(radius) if ref_pixels is ref.pixels else None,
    )
    return local_score(residual, cell), corr, (dy, dx)


def _p90(values: deque[float]) -> float:
    """numpy's default (linear) 90th percentile, in plain Python: 50 values cost
    less to sort than ``np.percentile`` costs to set up."""
    n = len(values)
    if n < 5:
        return 1.0
    ordered = sorted(values)
    pos = 0.9 * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class ChangeDetector:
    """Per-session change detector; feed it frames in order with ``observe``."""

    def __init__(self, options: ChangeOptions | None = None) -> None:
        self.options = options or ChangeOptions()
        self._prev: Signature | None = None
        self._prev2: Signature | None = None
        self._key: Signature | None = None
        self._key_drift: tuple[int, int] | None = None
        self._last_score = 0.0
        self._noise: deque[float] = deque(maxlen=self.options.noise_window)
        self._key_noise: deque[float] = deque(maxlen=self.options.noise_window)
        self._key_streak = 0
        self._entry_streak = 0
        self._last_call: float | None = None
        self._armed = True
        self._held: TriggerReason | None = None
        self._view = "ok"
        self._view_reason: str | None = None
        self._last_seen: Signature | None = None  # the last frame with something in it
        self._blind_since: float | None = None
        self._back: Signature | None = None  # one frame with something in it, after none
        self._announced: tuple[str, str | None] = ("ok", None)  # the view the user was told
        self._still_since: float | None = None
        self._still_map: np.ndarray | None = None
        self._still_last: np.ndarray | None = None

    @property
    def sees_nothing(self) -> bool:
        """The newest frame had too little light or texture to analyse."""
        return self._view != "ok"

    @property
    def dark(self) -> bool:
        """The newest frame was too dark (never sent to the model)."""
        return self._view_reason == "dark"

    def observe_jpeg(self, data: bytes, t: float) -> Decision:
        """Decide on one JPEG frame captured at ``t`` seconds."""
        o = self.options
        sig = signature_from_jpeg(
            data, width=o.signature_width, t=t, contrast_floor=o.contrast_floor
        )
        return self.observe(sig)

    def view_of(self, sig: Signature) -> tuple[str, str | None]:
        """``(view, reason)``: whether there is anything to analyse in ``sig``."""
        o = self.options
        if sig.level < o.dark_level and not self._lit(sig):
            return "nothing-to-see", "dark"
        if sig.texture < o.min_texture:
            return "nothing-to-see", "featureless"
        return "ok", None

    def _lit(self, sig: Signature) -> bool:
        """Dark on average, but with something bright in it (a lit sign, a window,
        a doorway at the end of a corridor): worth analysing."""
        o = self.options
        bright = int(np.count_nonzero(sig.raw >= o.bright_level))
        return bright >= o.bright_fraction * sig.raw.size

    def question(self, t: float) -> Decision:
        """The user asked: the model is called now, whatever the scores say."""
        self._mark_called(t)
        return Decision(fire=True, reason=TriggerReason.QUESTION)

    def observe(self, sig: Signature) -> Decision:
        """Decide on one frame's signature."""
        view, why = self.view_of(sig)
        first = self._prev is None and self._last_call is None
        if view == "ok" and self._view != "ok" and not first and self._back is None:
            self._back = sig  # something again; it counts from the next frame on
            return Decision(fire=False, view=self._view, view_reason=self._view_reason)
        back, self._back = self._back, None
        if view != "ok" and self._view == "ok":
            self._blind_since = sig.t
        self._view, self._view_reason = view, why
        if view != "ok":
            return self._nothing_to_see(sig, why)
        changed = self._announce("ok", None)
        if self._prev is None:  # the first frame, or the view is back after nothing to see
            if back is not None and self._glitch(sig):
                self._resume(back, sig)
                return Decision(fire=False, view_changed=changed)
            if first:
                self._restart(sig)
                return Decision(fire=True, reason=TriggerReason.FIRST_FRAME, view_changed=changed)
            return self._new_view(sig, TriggerReason.VIEW_RESTORED, view_changed=changed)
        if sig.pixels.shape != self._prev.pixels.shape:  # the phone was turned
            return self._new_view(sig, TriggerReason.ORIENTATION)
        return self._compare(sig)

    def _announce(self, view: str, why: str | None) -> bool:
        """Record the view as told to the user; True when that is news."""
        if (view, why) == self._announced:
            return False
        self._announced = (view, why)
        return True

    def _nothing_to_see(self, sig: Signature, why: str | None) -> Decision:
        """No event and no comparison: the next frame with something in it starts
        afresh (or, after a glitch, carries on). Only the slow heartbeat looks, and
        never at a dark frame. The state is news only once it has lasted
        ``glitch_s``: a black frame mid-walk is not worth telling the user about."""
        o = self.options
        self._prev = self._prev2 = None  # the keyframe and noise levels are kept for a glitch
        since = sig.t if self._blind_since is None else self._blind_since
        changed = False
        if self._announced[0] != "ok" or sig.t - since >= o.glitch_s - 1e-9:
            changed = self._announce("nothing-to-see", why)
        decision = Decision(
            fire=False, view="nothing-to-see", view_reason=why, view_changed=changed
        )
        last = self._last_call
        if (
            why != "dark"
            and o.blind_heartbeat_s is not None
            and (last is None or sig.t - last >= o.blind_heartbeat_s)
        ):
            self._mark_called(sig.t)
            decision.fire, decision.reason = True, TriggerReason.HEARTBEAT
        return decision

    def _glitch(self, sig: Signature) -> bool:
        """A short spell of nothing, then the view from before it: nothing to look at."""
        before, since = self._last_seen, self._blind_since
        if before is None or since is None or sig.t - since > self.options.glitch_s:
            return False
        if before.pixels.shape != sig.pixels.shape:
            return False
        o = self.options
        score, corr, _ = change_score(
            before,
            sig,
            radius=o.search_radius + 1,
            cell=o.cell,
            gradient_floor=o.gradient_floor,
            correlate=True,
        )
        return corr >= o.scene_cut_correlation and score < o.fire_threshold

    def _new_view(
        self, sig: Signature, reason: TriggerReason, *, view_changed: bool = False
    ) -> Decision:
        """A new view (the phone turned, or the view back after nothing to see): new
        references, and a look unless one was taken within the cooldown; then the
        look is held and fires when the cooldown ends. Without that, a client
        alternating sizes, or a flat frame with a new view after it, got a look on
        every frame or two (about 9 a second)."""
        o = self.options
        last = self._last_call
        if last is not None and sig.t - last < o.cooldown_s:
            self._restart(sig, look=False)
            self._held = self._held or reason
            return Decision(fire=False, reason=reason, held=True, view_changed=view_changed)
        self._restart(sig)
        return Decision(fire=True, reason=reason, view_changed=view_changed)

    def _restart(self, sig: Signature, *, look: bool = True) -> None:
        """A new view (first frame, view back, phone turned): new references, a look."""
        self._prev, self._prev2 = sig, None
        self._set_key(sig)
        self._last_seen = sig
        self._noise.clear()
        self._key_noise.clear()
        self._key_streak = self._entry_streak = 0
        self._armed = True
        if look:
            self._mark_called(sig.t)

    def _resume(self, back: Signature, sig: Signature) -> None:
        """After a glitch, carry on as if it had not happened: the keyframe and the
        noise levels from before it are kept (re-learning them from a few frames
        made the thresholds too low: a false "approach" followed), the two frames
        since are the new previous ones, and nothing is confirmed yet."""
        key = self._key
        if key is None or key.pixels.shape != sig.pixels.shape:
            key = sig
        # the first frame back may have another shape (the phone turned in the dark)
        self._prev2 = back if back.pixels.shape == sig.pixels.shape else None
        self._prev = sig
        if key is not self._key:
            self._set_key(key)
        else:
            self._key_drift = None  # the frames in the glitch are unknown
        self._last_seen = sig
        self._last_score = 0.0
        self._key_streak = self._entry_streak = 0
        self._still_since, self._still_map, self._still_last = None, None, None

    def _compare(self, sig: Signature) -> Decision:
        o = self.options
        assert self._prev is not None and self._key is not None
        scores = FrameScores()
        prev2 = self._prev2
        if prev2 is not None and prev2.pixels.shape != sig.pixels.shape:
            prev2 = None  # from before a turn: nothing to compare with
        # One shift per distinct reference (the keyframe is often prev or prev2),
        # estimated together.
        refs = {id(r): r for r in (self._prev, prev2, self._key) if r is not None}
        usable = [r for r in refs.values() if r.pixels.shape == sig.pixels.shape]
        shifts = {id(r): e[:2] for r, e in zip(usable, estimate_shifts(usable, sig), strict=True)}

        def shift_from(ref: Signature) -> tuple[int, int]:
            return shifts[id(ref)]

        score, scores.correlation, scores.shift = change_score(
            self._prev,
            sig,
            radius=o.search_radius,
            cell=o.cell,
            gradient_floor=o.gradient_floor,
            correlate=True,
            shift=shift_from(self._prev),
        )
        scores.local_prev = score
        # Confirmation: the change seen on the previous frame is still there now
        # (against the frame before it), so one blurred or glitched frame cannot fire.
        again: tuple[float, float, tuple[int, int]] | None = None
        if prev2 is not None:
            if self._last_score < min(o.rearm_threshold, o.fire_threshold):
                # The confirmation is at most the previous frame's score; below the
                # re-arm level and the firing floor it can neither fire nor keep the
                # detector disarmed, so it is not computed (about half the frames of
                # a walk) and the noise level takes that bound instead: a little
                # higher in a busy view, where the threshold is above its floor
                # (the same recall on four benchmark seeds).
                scores.confirmed = self._last_score
            else:
                again = change_score(
                    prev2,
                    sig,
                    radius=o.search_radius,
                    cell=o.cell,
                    gradient_floor=o.gradient_floor,
                    shift=shift_from(prev2),
                    slack=o.confirm_slack,
                )
                scores.confirmed = min(self._last_score, again[0])
        if self._key is prev2 and again is not None and o.key_slack == o.confirm_slack:
            scores.local_key, _, scores.key_shift = again  # the same comparison
        else:
            scores.local_key, _, scores.key_shift = change_score(
                self._key,
                sig,
                radius=o.search_radius,
                cell=o.cell,
                gradient_floor=o.gradient_floor,
                shift=shift_from(self._key),
                slack=o.key_slack,
            )
        # Phase correlation against an older frame now and then locks on a wrong peak
        # (13 px off on a walk): the residual is then high everywhere it should not
        # be and fires. The shifts from frame to frame since the keyframe say where
        # it should be; when the two disagree, the one that explains the frame
        # better (the lower score) is kept.
        if self._key_drift is not None:
            expected = (self._key_drift[0] + scores.shift[0], self._key_drift[1] + scores.shift[1])
            ky, kx = scores.key_shift
            if max(abs(ky - expected[0]), abs(kx - expected[1])) > o.shift_tolerance:
                alt, _, _ = change_score(
                    self._key,
                    sig,
                    radius=o.search_radius,
                    cell=o.cell,
                    gradient_floor=o.gradient_floor,
                    shift=expected,
                    slack=o.key_slack,
                )
                if alt < scores.local_key:
                    scores.local_key, scores.key_shift = alt, expected
        self._key_drift = scores.key_shift
        prev2_shift = shift_from(prev2) if prev2 is not None else None
        scores.still = self._still(sig, (scores.shift, prev2_shift, scores.key_shift))
        h, w = sig.pixels.shape
        kdy, kdx = scores.key_shift
        drifted = abs(kdy) > h * o.max_shift_fraction or abs(kdx) > w * o.max_shift_fraction
        if drifted or sig.t - self._key.t >= o.key_refresh_s:
            self._set_key(sig)  # panned away or long quiet: a new reference, not an event
        scores.noise = _p90(self._noise)
        scores.key_noise = _p90(self._key_noise)
        # Correlation says little about a low-contrast view (a textured wall shaking
        # decorrelates its own grain): there, a cut must also change level or contrast.
        prev = self._prev
        faint = min(prev.texture, sig.texture) < o.contrast_floor
        same_light = abs(prev.level - sig.level) < 15 and abs(prev.texture - sig.texture) < 8
        if faint and same_light:
            scores.correlation = max(scores.correlation, o.scene_cut_correlation)
        reason = self._classify(scores)
        self._noise.append(scores.confirmed)
        self._key_noise.append(scores.local_key)
        if self._exposure_step(sig):
            # An exposure step changes colours that clip in one channel more than
            # the grey level shows; the frame across it confirms nothing.
            score = 0.0
        self._prev2, self._prev, self._last_score = self._prev, sig, score
        self._last_seen = sig
        return self._policy(sig, reason, scores)

    def _exposure_step(self, sig: Signature) -> bool:
        """The typical grey level (the median: new content barely moves it) stepped
        by more than ``exposure_step`` from both previous frames, and by at least 8
        grey levels (in a dark corridor a level of drift is already 15 %). A
        flicker that comes back to the level of two frames ago is not a step."""
        o = self.options
        prev, prev2 = self._prev, self._prev2
        assert prev is not None
        now = sig.tone
        if abs(now - prev.tone) < 8.0:
            return False
        for ref in (prev, prev2):
            if ref is not None and abs(np.log((now + 1.0) / (ref.tone + 1.0))) <= o.exposure_step:
                return False
        return True

    def _still(
        self,
        sig: Signature,
        shifts: tuple[tuple[int, int], tuple[int, int] | None, tuple[int, int]],
    ) -> float:
        """In a view that does not move (a phone on a table, a harness, standing
        still), how far the worst cell's change exceeds that cell's own recent
        change. What moves in such a view on its own (people crossing a square,
        leaves) stays where it is, so something new in a quiet part stands out
        even while people walk elsewhere; with no shake to absorb, each pixel is
        compared with the same pixel. ``shifts``: to the previous frame, the one
        before it and the keyframe; a shift of one signature pixel (people crossing
        pull the phase correlation off now and then) pauses the still view, more
        ends it."""
        o = self.options
        prev, prev2 = self._prev, self._prev2
        shift, shift2, key_shift = shifts
        if (
            prev is None
            or prev2 is None
            or shift2 is None
            or max(abs(v) for v in (*shift, *shift2, *key_shift)) > 1
        ):
            self._still_since, self._still_map, self._still_last = None, None, None
            return 0.0
        if self._still_since is None:
            self._still_since = sig.t
        if shift != (0, 0) or shift2 != (0, 0):
            self._still_last = None  # a pixel is not compared with the same pixel now
            return 0.0
        now = self._cells0(prev, sig)
        again = self._cells0(prev2, sig)
        last, self._still_last = self._still_last, now
        if last is None or again is None or last.shape != again.shape:
            return 0.0
        confirmed = np.minimum(last, again)
        if self._still_map is None or self._still_map.shape != confirmed.shape:
            self._still_map = confirmed
            return 0.0
        score = 0.0
        if sig.t - self._still_since >= o.still_s - 1e-9:
            ratio = confirmed / (self._still_map + o.still_floor)
            # against the typical cell too: a phone nudged by a fraction of a
            # signature pixel raises every textured cell at once
            score = float(ratio.max()) / max(1.0, _median(ratio, exact=True))
        self._still_map *= o.still_decay
        np.maximum(self._still_map, confirmed, out=self._still_map)
        return score

    def _cells0(self, ref: Signature, sig: Signature) -> np.ndarray | None:
        o = self.options
        ref_pixels, cur_pixels, weight = in_one_tone(ref, sig, 0, 0)
        residual, _ = aligned_residual(
            ref_pixels, cur_pixels, 0, 0, 0, correlate=False, weight=weight, floor=o.gradient_floor
        )
        return cell_means(residual, o.cell)

    def _classify(self, s: FrameScores) -> TriggerReason | None:
        o = self.options
        if s.correlation < o.scene_cut_correlation:
            return TriggerReason.SCENE_CUT
        threshold = max(o.fire_threshold, o.noise_factor * s.noise)
        if s.confirmed < o.rearm_threshold:
            self._armed = True
        key_threshold = max(o.approach_threshold, o.noise_factor * s.key_noise)
        self._key_streak = self._key_streak + 1 if s.local_key >= key_threshold else 0
        entry = max(o.entry_threshold, o.entry_noise_factor * s.key_noise)
        self._entry_streak = self._entry_streak + 1 if s.local_key >= entry else 0
        if self._armed and self._entry_streak >= 2:
            return TriggerReason.NEW_CONTENT
        if self._armed and s.confirmed >= threshold:
            return TriggerReason.NEW_CONTENT
        if self._armed and s.still >= o.still_threshold:
            return TriggerReason.NEW_CONTENT
        if self._key_streak >= 2:
            return TriggerReason.APPROACH
        return None

    def _policy(self, sig: Signature, reason: TriggerReason | None, s: FrameScores) -> Decision:
        o = self.options
        assert self._last_call is not None
        since = sig.t - self._last_call
        if self._held is not None:
            reason = self._held  # the change that was held back is the one reported
        if reason is not None:
            if since < o.cooldown_s:
                self._held = self._held or reason  # the first reason is the one to report
                return Decision(fire=False, reason=reason, scores=s, held=True)
            self._fire(sig)
            return Decision(fire=True, reason=reason, scores=s)
        if o.heartbeat_s is not None and since >= o.heartbeat_s:
            self._fire(sig)
            return Decision(fire=True, reason=TriggerReason.HEARTBEAT, scores=s)
        return Decision(fire=False, scores=s)

    def _set_key(self, sig: Signature) -> None:
        self._key = sig
        self._key_drift = (0, 0)  # the shift from the keyframe to the previous frame

    def _fire(self, sig: Signature) -> None:
        self._mark_called(sig.t)
        self._set_key(sig)
        self._key_streak = 0
        self._entry_streak = 0
        self._armed = False

    def _mark_called(self, t: float) -> None:
        self._last_call = t
        self._held = None
