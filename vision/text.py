"""The text reader: signs, labels and pages read verbatim with OCR, beside the vision model.

Vision-language models paraphrase and sometimes invent text, and a blind user
cannot check, so every word read aloud comes from here. The backend is
``rapidocr-onnxruntime`` 1.4.4, whose PP-OCRv4 detection and recognition models
(English and Chinese) ship inside the wheel: it works offline. It runs on the
CPU in about 400 ms per 640x480 frame (2 shared cores); calls block, so the server
runs them on a worker thread, never on the event loop.

One read:

1. the frame is converted to RGB, downscaled to ``max_side`` and handed to
   rapidocr as a BGR array (a palette PNG passed by path reads as junk);
2. text regions are detected, on the frame at its own size (a 640x480 frame
   as it is; a smaller image enlarged to ``detect_side``, at most
   ``detect_max_upscale`` times); if most are tall, or most read upside down, the
   page is turned in the frame (90, 180 or 270 degrees): the frame is rotated
   back and detected again, so lines come in the page's own order;
3. each region's sharpness is measured as the width of its edges, in pixels
   (contrast divided by the steepest gradient: about 2 px when sharp). A
   region whose edges are wider than ``max_edge_px`` (and than
   ``max_edge_ratio`` of its height) is too blurred to read: it is never
   recognised, because a recogniser fed a blur still answers, with invented
   words;
4. sharp regions are recognised; a line under ``min_confidence`` is dropped;
   a lone digit inside a lower-case word, or letter inside a number, is mended
   (``fix_confusions``: "Ro0m 214" is read "Room 214");
5. when nothing at all was detected, a cheap probe (the detector on a small,
   contrast-stretched and sharpened copy) tells "no text" from "text too
   blurred for the detector", which a defocused page is.

Errors::

    VisionError                      (vision/errors.py)
    └── TextReaderError              anything the text reader reports
        ├── TextReaderUnavailable    rapidocr-onnxruntime is missing or its models fail
        │                            to load (also a ModelUnavailable); names the fix
        └── TextImageError           the frame could not be decoded
"""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vision.errors import ModelUnavailable, VisionError
from vision.reading import (
    Box,
    Status,
    TextLine,
    TextReading,
    edges_touched,
    fix_confusions,
    is_read_request,
    match_sign,
    place,
    reading_order,
    sentences,
)
from vision.upright import upright

__all__ = [
    "TextImageError",
    "TextLine",
    "TextOptions",
    "TextReader",
    "TextReaderError",
    "TextReaderUnavailable",
    "TextReading",
    "fix_confusions",
    "is_read_request",
    "match_sign",
    "sentences",
]

log = logging.getLogger("seealoud.text")

INSTALL_HINT = "pip install 'seealoud[ocr]' (rapidocr-onnxruntime==1.4.4, models included)"


class TextReaderError(VisionError):
    """Base of the text reader's errors; messages are readable by an operator."""


class TextReaderUnavailable(TextReaderError, ModelUnavailable):
    """The OCR package or its models cannot be loaded; the message names the fix."""


class TextImageError(TextReaderError, ValueError):
    """The frame is not a decodable image; drop it."""


@dataclass(kw_only=True)
class TextOptions:
    """How the text reader reads and what it refuses.

    Attributes:
        min_confidence: Lines the recogniser is less sure of than this (0..1)
            are dropped. Measured by ``benchmarks/text_bench.py`` (no threshold,
            no blur check): correct lines of rendered signs and pages scored
            0.88 ("Room 214" in a monospaced font) to 1.0, words read out of
            blurred signs 0.30 to 0.77 ("Enegency es"). The threshold alone does
            not separate them; the blur check, which refuses every blurred sign
            before recognition, does, and 0.75 still drops most guesses should
            it miss one. A misread in a sharp line ("Informationdesk", 0.99;
            "Ro0m 214", 0.96, at rapidocr's detection size) is beyond any
            threshold: ``fix_confusions`` is for the letter/digit ones.
        max_side: Longer side, in pixels, a frame is downscaled to before
            reading (speed; phone frames of 640x480 are read as they are).
            ``None`` reads at full size.
        detect_side: The detector works on the frame enlarged so its shorter
            side is at least this many pixels (never shrunk). 480 leaves a
            640x480 phone frame as it is: rapidocr's default of 736 enlarged it
            to 992x736 and took 1.7 times as long (median 716 ms against 415 ms
            in one run of ``benchmarks/text_bench.py``) for as many signs read
            exactly (18 of 19).
        detect_max_upscale: ... but never enlarged more than this factor: a
            small dense page (556x257) was enlarged 2.9 times: 4.6 s against
            2.7 s capped, for the same text. Most of a dense page's time is
            recognition (each line scaled to 48 px high), not detection.
            ``None``: no cap.
        max_edge_px: A text region whose edges are wider than this many
            pixels (about 2 when sharp, 2.7 after a slight blur) is too
            blurred to read...
        max_edge_ratio: ... unless its edges are also narrower than this
            fraction of the region's height: large letters stay legible
            through more blur than small print. ``None`` turns the blur
            check off (every region is recognised).
        probe_side: When nothing is detected, the longer side of the small
            sharpened copy the blur probe looks at. ``None`` turns the probe
            off (a blur the detector cannot see then reads as "none").
        probe_min_area: Fraction of the probe's pixels that must look like
            text for "text is there but too blurred".
        edge_margin: Text within this fraction of a frame edge runs off it.
        rotate_pages: Detect pages turned 90, 180 or 270 degrees and read them
            in their own orientation.
        threads: CPU threads for the OCR models; ``None`` lets onnxruntime
            choose (all cores).
        fix_confusions: Mend a lone digit inside a lower-case word ("Ro0m"
            read at 0.96 becomes "Room") and a lone letter inside a number, see
            :func:`vision.reading.fix_confusions`; the line keeps what was read
            in ``read_as``.
    """

    min_confidence: float = 0.75
    max_side: int | None = 1600
    detect_side: int = 480
    detect_max_upscale: float | None = 1.5
    max_edge_px: float = 4.0
    max_edge_ratio: float | None = 0.1
    probe_side: int | None = 320
    probe_min_area: float = 0.003
    edge_margin: float = 0.012
    rotate_pages: bool = True
    threads: int | None = None
    fix_confusions: bool = True


@dataclass(eq=False)
class _Region:
    """One detected text region in the working image (the page's orientation)."""

    quad: np.ndarray  # 4x2 float32, clockwise from top-left
    box: Box  # normalised, page orientation
    height: float
    edge_px: float
    blurred: bool
    text: str = ""
    confidence: float = 0.0


class TextReader:
    """Reads the text in a frame; load once, then call from one worker thread.

    ``read_jpeg`` / ``read_image`` block for a few hundred milliseconds; an
    internal lock makes concurrent calls wait for each other rather than
    share rapidocr's (stateful) pre-processing.
    """

    def __init__(self, options: TextOptions | None = None) -> None:
        self.options = options or TextOptions()
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """True once :meth:`load` has succeeded."""
        return self._engine is not None

    def load(self) -> None:
        """Import rapidocr and load its bundled models (about a second), then warm up.

        Raises:
            TextReaderUnavailable: the package is not installed or its models fail.
        """
        if self._engine is not None:
            return
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise TextReaderUnavailable(
                f"text reading needs rapidocr-onnxruntime ({exc}): {INSTALL_HINT}"
            ) from exc
        o = self.options
        kwargs: dict[str, Any] = {
            "text_score": 0.0,  # we filter by our own threshold
            # The detection size is chosen per frame in _detect (detect_side,
            # detect_max_upscale); the engine's own pipeline keeps rapidocr's defaults
            # (the benchmark's baseline).
        }
        if o.threads is not None:
            kwargs["intra_op_num_threads"] = o.threads
        started = time.perf_counter()
        try:
            engine = RapidOCR(**kwargs)
        except Exception as exc:  # onnxruntime raises its own types on bad models
            raise TextReaderUnavailable(
                f"the OCR models failed to load ({type(exc).__name__}: {exc}); "
                f"reinstall: {INSTALL_HINT}"
            ) from exc
        self._engine = engine
        warm = Image.new("RGB", (160, 48), (255, 255, 255))
        warm.paste((0, 0, 0), (20, 16, 140, 32))
        self.read_image(warm)
        log.info("text reader loaded in %.0f ms", (time.perf_counter() - started) * 1000)

    # ------------------------------------------------------------------ reading

    def read_jpeg(self, data: bytes) -> TextReading:
        """Read the text in an encoded image (JPEG, PNG...). Blocking."""
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                rgb = upright(img, img.convert("RGB"))
        except Exception as exc:  # Pillow raises many types on corrupt data
            raise TextImageError(
                f"the frame is not a decodable image ({type(exc).__name__}, {len(data)} bytes)"
            ) from exc
        return self.read_image(rgb)

    def read_image(self, image: Image.Image) -> TextReading:
        """Read the text in a Pillow image, in the page's reading order. Blocking."""
        if self._engine is None:
            raise TextReaderUnavailable(
                f"the text reader is not loaded: call load() ({INSTALL_HINT})"
            )
        started = time.perf_counter()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        o = self.options
        if o.max_side is not None and max(rgb.size) > o.max_side:
            scale = o.max_side / max(rgb.size)
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
        with self._lock:
            reading = self._read(bgr)
        reading.latency_ms = (time.perf_counter() - started) * 1000
        return reading

    def _read(self, frame: np.ndarray) -> TextReading:
        quads = self._detect(frame)
        if len(quads) == 0:
            status: Status = "blurred" if self._blur_probe(frame) else "none"
            return TextReading(status=status, blurred_regions=int(status == "blurred"))
        regions = self._measure(frame, quads)
        sharp = [r for r in regions if not r.blurred]
        # Only crisp regions vote on the page's rotation: a blur's "upside down" is noise.
        crisp = [r.quad for r in sharp if r.edge_px <= self.options.max_edge_px]
        rotation = 0
        if self.options.rotate_pages and crisp:
            rotation = self._page_rotation(frame, np.stack(crisp))
        page = frame
        if rotation:
            page = np.ascontiguousarray(np.rot90(frame, k=-rotation // 90))
            regions = self._measure(page, _rotate_quads(quads, rotation, frame.shape))
            sharp = [r for r in regions if not r.blurred]
        self._recognise(page, sharp)
        return self._assemble(frame, regions, rotation)

    def _detect(self, image: np.ndarray) -> np.ndarray:
        """Text regions (quads in ``image``'s pixels), detected at :meth:`_detect_side`.

        Same steps as rapidocr 1.4.4's ``TextDetector.__call__``, with the size chosen here
        rather than from the engine's fixed limit.
        """
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

        det = self._engine.text_det
        h, w = image.shape[:2]
        tensor = DetPreProcess(self._detect_side(h, w), "min", det.mean, det.std)(image)
        if tensor is None:
            return np.zeros((0, 4, 2), dtype=np.float32)
        preds = det.infer(tensor)[0]
        quads, _scores = det.postprocess_op(preds, (h, w))
        quads = det.filter_tag_det_res(quads, (h, w))
        if quads is None or len(quads) == 0:
            return np.zeros((0, 4, 2), dtype=np.float32)
        return np.asarray(quads, dtype=np.float32)

    def _detect_side(self, h: int, w: int) -> int:
        """The shorter side the detector sees: ``detect_side``, capped by ``detect_max_upscale``."""
        o = self.options
        shorter = min(h, w)
        side = o.detect_side
        if o.detect_max_upscale is not None:
            side = min(side, round(shorter * o.detect_max_upscale))
        return max(side, shorter)

    def _crops(self, image: np.ndarray, quads: np.ndarray) -> list[np.ndarray]:
        return list(self._engine.get_crop_img_list(image, [q.copy() for q in quads]))

    def _page_rotation(self, frame: np.ndarray, quads: np.ndarray) -> int:
        """How far (degrees counter-clockwise) the page is turned in the frame.

        Tall regions mean a page on its side; the direction classifier (which
        tells upright from upside-down lines) then says which side. Votes are
        weighted by each region's length so a page outvotes a stray word.
        """
        sides = np.linalg.norm(quads[:, 1] - quads[:, 0], axis=1)
        heights = np.linalg.norm(quads[:, 3] - quads[:, 0], axis=1)
        length = np.maximum(sides, heights)
        tall = heights >= 1.5 * sides
        vertical = float(length[tall].sum()) > 0.5 * float(length.sum())
        crops = self._crops(frame, quads)
        _, labels, _ = self._engine.text_cls(crops)
        flipped = sum(
            float(w)
            for w, (label, score) in zip(length, labels, strict=True)
            if label == "180" and float(score) >= 0.9
        )
        upside_down = flipped > 0.5 * float(length.sum())
        if vertical:
            # rapidocr turns a tall crop a quarter counter-clockwise before classifying:
            # upright afterwards means the page was turned clockwise (270 CCW).
            return 90 if upside_down else 270
        return 180 if upside_down else 0

    def _measure(self, page: np.ndarray, quads: np.ndarray) -> list[_Region]:
        """Box, height and edge width (blur) of each region, in the page's orientation."""
        import cv2

        o = self.options
        h, w = page.shape[:2]
        gray = cv2.cvtColor(page, cv2.COLOR_BGR2GRAY)
        crops = self._crops(gray[:, :, None].repeat(3, axis=2), quads)
        regions = []
        for quad, crop in zip(quads, crops, strict=True):
            patch = crop[:, :, 0].astype(np.float32)
            edge = _edge_width(patch, cv2)
            height = float(min(patch.shape[:2]))
            blurred = o.max_edge_ratio is not None and edge > max(
                o.max_edge_px, o.max_edge_ratio * height
            )
            x0, y0 = quad.min(axis=0)
            x1, y1 = quad.max(axis=0)
            box = (float(x0) / w, float(y0) / h, float(x1) / w, float(y1) / h)
            regions.append(
                _Region(quad=quad, box=box, height=height, edge_px=edge, blurred=blurred)
            )
        return regions

    def _recognise(self, page: np.ndarray, regions: list[_Region]) -> None:
        if not regions:
            return
        import cv2

        crops = self._crops(page, np.stack([r.quad for r in regions]))
        crops, _, _ = self._engine.text_cls(crops)
        # Scale each line to the recogniser's input height ourselves, bicubic: its own
        # bilinear resize of JPEG-compressed print drops the spaces between words
        # ("Lifttoallfloors"); measured in benchmarks/text_bench.py.
        height = int(self._engine.text_rec.rec_image_shape[1])
        crops = [
            cv2.resize(
                c,
                None,
                fx=height / c.shape[0],
                fy=height / c.shape[0],
                interpolation=cv2.INTER_CUBIC,
            )
            for c in crops
        ]
        results, _ = self._engine.text_rec(crops)
        for region, (text, score) in zip(regions, results, strict=True):
            region.text = str(text).strip()
            region.confidence = float(score)

    def _blur_probe(self, frame: np.ndarray) -> bool:
        """True when a small sharpened copy shows text the detector missed (defocus)."""
        import cv2

        o = self.options
        if o.probe_side is None:
            return False
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
        scale = min(1.0, o.probe_side / max(gray.shape))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        lo, hi = np.percentile(small, (1, 99))
        if hi - lo < 8:  # a flat frame: nothing to find
            return False
        stretched = (small - lo) * (255.0 / (hi - lo))
        sharpened = stretched + 2.0 * (stretched - cv2.GaussianBlur(stretched, (0, 0), 3.0))
        probe = np.clip(sharpened, 0, 255).astype(np.uint8)
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

        det = self._engine.text_det
        side = max(probe.shape)
        tensor = DetPreProcess(side, "max", det.mean, det.std)(
            np.repeat(probe[:, :, None], 3, axis=2)
        )
        if tensor is None:
            return False
        prob = det.infer(tensor)[0][0, 0]
        return float(np.mean(prob > det.postprocess_op.thresh)) >= o.probe_min_area

    def _edges(self, gray: np.ndarray, box: Box) -> set[str]:
        """Frame edges a region (``box`` in the frame) runs off: it lies within
        ``edge_margin`` of the edge and ink reaches the edge's outermost pixels.

        The detector's box reaches a few pixels past the letters, more so when it
        works at a frame's own size: the last line of a page whose descenders stop
        4 px above the bottom edge touched it by box alone, and was dropped as cut.
        """
        h, w = gray.shape
        x0, y0 = int(box[0] * w), int(box[1] * h)
        x1, y1 = max(x0 + 1, int(np.ceil(box[2] * w))), max(y0 + 1, int(np.ceil(box[3] * h)))
        region = gray[y0:y1, x0:x1]
        lo, hi = np.percentile(region, (5, 95))
        strips = {
            "top": gray[:2, x0:x1],
            "bottom": gray[-2:, x0:x1],
            "left": gray[y0:y1, :2],
            "right": gray[y0:y1, -2:],
        }
        touched = set()
        for edge in edges_touched(box, self.options.edge_margin):
            s_lo, s_hi = np.percentile(strips[edge], (2, 98))
            # A blank strip (under a third of the line's own contrast) cuts no letter.
            if float(s_hi - s_lo) >= max(8.0, float(hi - lo) / 3):
                touched.add(edge)
        return touched

    def _assemble(self, frame: np.ndarray, regions: list[_Region], rotation: int) -> TextReading:
        import cv2

        o = self.options
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        edges = [self._edges(gray, _unrotate(r.box, rotation)) for r in regions]
        # A line touching the top or bottom edge has its letters cut through ("Gate 12"
        # read "Gate iz"): it is not read, only reported as cut off. A line running off
        # the left or right keeps its whole letters and is read as far as it goes.
        kept = [
            r
            for r, at in zip(regions, edges, strict=True)
            if not r.blurred
            and r.text
            and r.confidence >= o.min_confidence
            and not {"top", "bottom"} & at
        ]
        # A region that was too soft to trust, or read badly while soft, is blurred text;
        # a sharp one read badly is texture or a cut letter and is just dropped.
        blurred = [r for r in regions if r.blurred or (r not in kept and r.edge_px > o.max_edge_px)]
        order = reading_order([r.box for r in kept])
        lines = []
        for i in order:
            r = kept[i]
            frame_box = _unrotate(r.box, rotation)
            horizontal, vertical = place(frame_box)
            text = fix_confusions(r.text) if o.fix_confusions else r.text
            lines.append(
                TextLine(
                    text=text,
                    confidence=r.confidence,
                    box=frame_box,
                    horizontal=horizontal,
                    vertical=vertical,
                    read_as=r.text if text != r.text else None,
                )
            )
        # Any text the detector saw at an edge counts, even letters too cut to read:
        # they are what tells the user which way the rest of the text is.
        cut: set[str] = set()
        for r, at in zip(regions, edges, strict=True):
            if r.blurred or r.text:
                cut.update(at)
        status: Status = (
            ("partial" if blurred else "ok") if lines else "blurred" if blurred else "none"
        )
        return TextReading(
            lines=lines,
            status=status,
            cut_off=[e for e in ("left", "right", "top", "bottom") if e in cut],
            rotation=rotation,
            blurred_regions=len(blurred),
        )


def _edge_width(patch: np.ndarray, cv2: Any) -> float:
    """Width in pixels of the region's edges: its contrast over its steepest gradient.

    A sharp edge climbs the whole contrast in about two pixels; a Gaussian blur
    of sigma s spreads it over about 2.5 s. Independent of contrast and
    exposure; small for sharp print of any size.
    """
    gx = cv2.Sobel(patch, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(patch, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    steepest = float(np.percentile(np.hypot(gx, gy), 99))
    lo, hi = np.percentile(patch, (5, 95))
    return float(hi - lo) / max(steepest, 1e-3)


def _rotate_quads(quads: np.ndarray, rotation: int, shape: tuple[int, ...]) -> np.ndarray:
    """Detected quads of the frame, in the page obtained by
    ``np.rot90(frame, k=-rotation // 90)``, clockwise from their new top-left."""
    h, w = shape[:2]
    x, y = quads[..., 0], quads[..., 1]
    if rotation == 90:  # page = frame turned clockwise
        turned = np.stack([h - 1 - y, x], axis=-1)
    elif rotation == 180:
        turned = np.stack([w - 1 - x, h - 1 - y], axis=-1)
    else:  # 270: page = frame turned counter-clockwise
        turned = np.stack([y, w - 1 - x], axis=-1)
    # Re-anchor each quad at its top-left corner (smallest x + y), keeping the clockwise order.
    start = np.argmin(turned.sum(axis=-1), axis=1)
    index = (start[:, None] + np.arange(4)[None, :]) % 4
    return np.take_along_axis(turned, index[:, :, None], axis=1).astype(np.float32)


def _unrotate(box: Box, rotation: int) -> Box:
    """A normalised box in the page's orientation, back in the frame's.

    The page was obtained by turning the frame ``rotation`` degrees clockwise
    (``np.rot90(frame, k=-rotation // 90)``); this turns the box back.
    """
    x0, y0, x1, y1 = box
    if rotation == 90:
        # frame = page turned 90 CCW: page (x, y) -> frame (y, 1 - x)
        return (y0, 1 - x1, y1, 1 - x0)
    if rotation == 180:
        return (1 - x1, 1 - y1, 1 - x0, 1 - y0)
    if rotation == 270:
        # frame = page turned 90 CW: page (x, y) -> frame (1 - y, x)
        return (1 - y1, x0, 1 - y0, x1)
    return box
