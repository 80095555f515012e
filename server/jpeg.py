"""Checking a camera frame before anything decodes it, and reading a JPEG's size
from its header.

A 544-byte JPEG can claim 13000x13000 pixels and cost half a gigabyte and
half a second to decode. The frame's own start-of-frame marker says its real
size; the server compares it with the frame header and a pixel cap before
anything decodes the image. A scan over the marker segments, a few
microseconds, with every length checked against the buffer.
"""

from __future__ import annotations

from collections.abc import Iterator

from protocol import CameraFrame, ErrorCode

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SEGMENTS = _SOF | {0xC4, 0xC8, 0xCC, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xFE} | set(range(0xE0, 0xFE))
"""Markers followed by a length: frame headers, tables, APPn, COM, JPGn. Any other
byte after 0xFF is refused, not read as a length: libjpeg skips 0xFF 0x00 as junk and
reads on, so a scan that jumped over it with a made-up length found a 640x480 frame
header the decoder never saw, while the decoder found a 13000x13000 one."""


MAX_DIMENSION = 8192
MAX_SCANS = 16
"""A progressive JPEG from a camera has about ten scans (libjpeg's own script: 10 for
colour, 6 for grey). Each scan is another pass over every coefficient: a megabyte of one
tiny scan repeated 80,000 times took 10.8 s to decode, and 64 scans of a 2000x2000 frame,
arithmetic-coded, 113 ms against 1.1 ms for a camera's. The markers can be counted
without decoding (0xFF 0xDA is never data)."""
CODINGS = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
"""Frame headers a camera writes (Huffman-coded, sequential or progressive). Arithmetic
coding, lossless and hierarchical JPEGs cost many times more to decode, and Pillow refuses
some of them only after reading them."""


class JpegHeaderError(ValueError):
    """The bytes have no readable JPEG start-of-frame; the message says what is wrong."""


MAX_SEGMENTS = 64
"""Segments before the first scan. A camera writes about ten (APP0/APP1, a few
quantisation and Huffman tables, ICC chunks); a frame padded with a quarter of a
million empty segments took a header reader 0.5 s of the event loop."""
MAX_FILL = 16
"""Fill bytes (0xFF before a marker) allowed in all the headers, for the same reason."""


def jpeg_size(data: bytes, *, max_scan: int = 1 << 20) -> tuple[int, int]:
    """``(width, height)`` from the frame header, reading the headers as libjpeg does.

    Strict where a camera never is loose, so that this reading and the decoder's
    cannot differ and the work is bounded: only markers that carry a length (or a
    few fill bytes) before the first scan, at most ``MAX_SEGMENTS`` segments, and
    exactly one frame header (with two, Pillow sized the image by the second while
    this read the first)."""
    size: tuple[int, int] | None = None
    tables = 0
    for marker, i, end in header_segments(data, max_scan=max_scan):
        if marker in _SOF:
            if size is not None:
                raise JpegHeaderError("corrupt JPEG: a second frame header")
            if i + 10 > len(data):
                raise JpegHeaderError("truncated JPEG frame header")
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if width == 0 or height == 0:
                raise JpegHeaderError("JPEG frame header has a zero size")
            if marker not in CODINGS:
                raise JpegHeaderError(
                    f"JPEG coding 0x{marker:02X} (arithmetic, lossless or hierarchical) is "
                    "not accepted: send a baseline or progressive JPEG"
                )
            bits, components = data[i + 4], data[i + 9]
            if bits != 8 or components not in (1, 3, 4):
                raise JpegHeaderError(
                    f"a JPEG of {bits}-bit samples in {components} components is not "
                    "accepted: send an 8-bit camera JPEG (grey, colour or CMYK)"
                )
            if end - i - 2 < 8 + 3 * components:
                raise JpegHeaderError("corrupt JPEG: frame header too short")
            size = (width, height)
        elif marker == 0xDB:
            tables += _quantisation_tables(data, i + 4, end)
            if tables > MAX_QUANT_TABLES:
                raise JpegHeaderError(
                    f"corrupt JPEG: more than {MAX_QUANT_TABLES} quantisation tables"
                )
        elif marker in (0xE0, 0xEE) and _short_app(data, i + 4, end):
            raise JpegHeaderError("corrupt JPEG: a JFIF or Adobe segment too short to read")
    if size is None:
        raise JpegHeaderError("no JPEG frame header found")
    return size


MAX_QUANT_TABLES = 8
"""Quantisation tables before the first scan. A camera writes two to four (one per
component at most, four slots); Pillow reads each in Python, holding the event loop's
GIL: 15 segments of 1,000 tables each took it 170-220 ms a frame (an attacker pass)."""


def _quantisation_tables(data: bytes, start: int, end: int) -> int:
    """How many tables a DQT segment's payload ``data[start:end]`` holds; each must be
    whole (8- or 16-bit, slot 0-3), as libjpeg and Pillow read them."""
    count, k = 0, start
    end = min(end, len(data))
    while k < end:
        precision, slot = data[k] >> 4, data[k] & 15
        if precision > 1 or slot > 3:
            raise JpegHeaderError("corrupt JPEG: a quantisation table of an unknown kind")
        k += 1 + 64 * (precision + 1)
        count += 1
        if count > MAX_QUANT_TABLES:
            break  # the caller refuses it
    if k != end and count <= MAX_QUANT_TABLES:
        raise JpegHeaderError("corrupt JPEG: a quantisation table cut short")
    return count


def _short_app(data: bytes, start: int, end: int) -> bool:
    """A JFIF (APP0) or Adobe (APP14) segment too short for the fields Pillow reads from
    it (its version): libjpeg decodes such a frame, Pillow refuses it, so the change
    detector saw a frame the vision model then failed on, every time (an attacker pass)."""
    payload = data[start : min(end, len(data))]
    return (payload[:4] == b"JFIF" or payload[:5] == b"Adobe") and len(payload) < 7


def header_segments(data: bytes, *, max_scan: int = 1 << 20) -> Iterator[tuple[int, int, int]]:
    """``(marker, start, end)`` of each segment before the first scan, in order, then
    ``(-1, i, i)`` with ``i`` where the headers end (the first scan, the end of the image
    or of the data). The one strict, bounded walk (see ``jpeg_size``) that both reading a
    frame's size and dropping its metadata go by: raises ``JpegHeaderError``."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        raise JpegHeaderError("not a JPEG (no start-of-image marker)")
    i, segments, fill = 2, 0, 0
    end = min(len(data), max_scan)
    while i + 4 <= end:
        if data[i] != 0xFF:
            raise JpegHeaderError(f"corrupt JPEG: no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            fill += 1
            if fill > MAX_FILL:
                raise JpegHeaderError("corrupt JPEG: too many fill bytes in the headers")
            i += 1
            continue
        if marker in (0xD9, 0xDA):
            break  # end of image, or the first scan: the headers are over
        if marker not in _SEGMENTS:
            raise JpegHeaderError(f"corrupt JPEG: unexpected marker 0x{marker:02X} at byte {i}")
        segments += 1
        if segments > MAX_SEGMENTS:
            raise JpegHeaderError(f"corrupt JPEG: more than {MAX_SEGMENTS} header segments")
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            raise JpegHeaderError("corrupt JPEG: bad segment length")
        yield marker, i, i + 2 + length
        i += 2 + length
    else:
        if end < len(data):  # a configured frame limit over max_scan: bounded all the same
            raise JpegHeaderError(f"corrupt JPEG: headers longer than {max_scan} bytes")
    yield -1, i, i


def frame_problem(
    frame: CameraFrame, *, max_bytes: int, max_pixels: int
) -> tuple[ErrorCode, str] | None:
    """Why ``frame`` is refused, checked before anything decodes it (its size, format,
    header, and the JPEG's own size against the header and the pixel cap); else None."""
    if len(frame.payload) > max_bytes:
        return ErrorCode.FRAME_TOO_LARGE, (
            f"frame of {len(frame.payload)} bytes is over the {max_bytes}-byte limit; "
            "send a smaller or more compressed JPEG"
        )
    if frame.format != "jpeg":
        return ErrorCode.UNSUPPORTED_FORMAT, f"frame format {frame.format[:20]!r}: use 'jpeg'"
    if not (0 < frame.width <= MAX_DIMENSION and 0 < frame.height <= MAX_DIMENSION):
        return ErrorCode.BAD_MESSAGE, f"frame size {frame.width}x{frame.height} is invalid"
    if frame.seq < 0 or frame.ts < 0:
        return ErrorCode.BAD_MESSAGE, "frame seq and ts must be non-negative"
    try:
        width, height = jpeg_size(frame.payload)
    except JpegHeaderError as exc:
        return ErrorCode.BAD_MESSAGE, f"frame payload: {exc}"
    if (width, height) != (frame.width, frame.height):
        return ErrorCode.BAD_MESSAGE, (
            f"the JPEG is {width}x{height} but the header says {frame.width}x{frame.height}"
        )
    if (scans := jpeg_scans(frame.payload)) > MAX_SCANS:
        return ErrorCode.BAD_MESSAGE, (
            f"the JPEG has {scans} scans (at most {MAX_SCANS}); send a plain camera JPEG"
        )
    if width * height > max_pixels:
        return ErrorCode.FRAME_TOO_LARGE, (
            f"frame of {width}x{height} pixels is over the {max_pixels}-pixel limit; send 640x480"
        )
    return None


def jpeg_scans(data: bytes) -> int:
    """How many scans (start-of-scan markers) the JPEG has; entropy-coded data escapes
    every 0xFF, so each 0xFF 0xDA is a marker."""
    return data.count(b"\xff\xda")


KEPT_APP = {0xE0, 0xEE}
"""APPn segments a frame keeps: JFIF (APP0) and Adobe (APP14, which says how a CMYK or
YCCK frame's colours are coded). The rest (EXIF, XMP, ICC, the multi-picture index,
comments) is metadata: some of it is parsed by Pillow in pure Python, holding the GIL
for the whole server (a 64 KB EXIF of 5,400 entries pointing back at itself cost 930 ms a
frame and starved every other phone's detector), and it can carry where the photo was
taken and the phone's serial number, which the model has no use for."""
MAX_EXIF_ENTRIES = 64
"""Entries of the first EXIF directory read for the orientation (a phone writes about
ten; the orientation, 0x0112, comes among the first, sorted or not)."""


def plain_headers(data: bytes) -> bytes:
    """``data`` with only the headers a decoder needs, and the EXIF orientation (which
    every decoder here applies) as a one-entry EXIF of our own; ``data`` itself when there
    is nothing to drop. The same walk as ``frame_problem``'s, so it is as bounded; what
    that walk refuses is passed on as it is."""
    keep: list[bytes] = []
    orientation: int | None = None  # from the first EXIF, as Pillow reads it
    kept_to = 0  # everything before this is in ``keep`` (fill bytes included)
    try:
        for marker, start, end in header_segments(data):
            if (0xE0 <= marker <= 0xEF and marker not in KEPT_APP) or marker == 0xFE:
                keep.append(data[kept_to:start])
                kept_to = end
                segment = data[start:end]
                if marker == 0xE1 and segment[4:10] == b"Exif\x00\x00" and orientation is None:
                    orientation = _orientation(segment[10:]) or 1
    except JpegHeaderError:
        return data  # not what frame_problem accepted: leave it to the decoder's error
    if not keep:
        return data
    keep.append(data[kept_to:])
    if orientation is not None and orientation != 1:
        keep.insert(1, _exif_orientation(orientation))
    return b"".join(keep)


def _orientation(tiff: bytes) -> int | None:
    """The orientation tag (1-8) of an EXIF block's first directory, reading at most
    ``MAX_EXIF_ENTRIES`` entries; None when absent or not valid."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None

    def num(at: int, size: int) -> int:
        return int.from_bytes(tiff[at : at + size], order)  # type: ignore[arg-type]

    if num(2, 2) != 42:
        return None
    ifd = num(4, 4)
    if ifd + 2 > len(tiff):
        return None
    for k in range(min(num(ifd, 2), MAX_EXIF_ENTRIES)):
        at = ifd + 2 + 12 * k
        if at + 12 > len(tiff):
            return None
        tag = num(at, 2)
        if tag == 0x0112:  # not always sorted: Android's ExifInterface writes hash order
            value = num(at + 8, 2) if num(at + 2, 2) == 3 else 0
            return value if 1 <= value <= 8 else None
    return None


def _exif_orientation(orientation: int) -> bytes:
    """An APP1 segment with an EXIF block holding only ``orientation``."""
    tiff = (
        b"MM\x00\x2a\x00\x00\x00\x08"  # big-endian TIFF, first directory at 8
        + (1).to_bytes(2, "big")  # one entry
        + (0x0112).to_bytes(2, "big")
        + (3).to_bytes(2, "big")  # SHORT
        + (1).to_bytes(4, "big")
        + orientation.to_bytes(2, "big")
        + b"\x00\x00"
        + b"\x00\x00\x00\x00"  # no next directory
    )
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + (2 + len(payload)).to_bytes(2, "big") + payload
