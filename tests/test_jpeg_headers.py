"""A frame's metadata is dropped before anything decodes it; its orientation is kept.

Found by an attacker pass: a 72 KB frame whose EXIF directory held 5,400 entries, its
sub-directory pointers aimed back at itself, cost Pillow's pure-Python EXIF parser 930 ms
a frame while holding the GIL, and starved every other phone's change detector. EXIF
(and XMP, ICC, the multi-picture index, comments) can also say where the picture was
taken; none of it reaches a decoder now.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from protocol import CameraFrame
from server.jpeg import frame_problem, plain_headers
from vision.change import ChangeDetector, ChangeDetectorError, signature_from_jpeg


def picture(mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    img.paste((30, 30, 220), (0, 0, 80, 120))  # left half blue: which way up is visible
    return img.convert(mode)


def encode(img: Image.Image, *, exif: bytes | None = None, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, **({"exif": exif} if exif else {}), **kw)
    return buf.getvalue()


def exif_bomb(orientation: int, entries: int = 5400) -> bytes:
    """The attacker's EXIF: one big directory, the orientation first, the Exif, GPS and
    Interop pointers all pointing back at the same directory."""
    ents = [struct.pack(">HHLHH", 0x0112, 3, 1, orientation, 0)]
    ents += [struct.pack(">HHLL", t, 4, 1, 8) for t in (0x8769, 0x8825, 0xA005)]
    ents += [struct.pack(">HHLL", 0x1000 + i, 7, 8, 0) for i in range(entries - 4)]
    ifd = struct.pack(">H", len(ents)) + b"".join(ents) + b"\x00\x00\x00\x00"
    return b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + ifd


def with_exif(jpeg: bytes, exif: bytes) -> bytes:
    """``jpeg`` with ``exif`` as an APP1 segment right after the start of image."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(exif)) + exif + jpeg[2:]


def accepted(jpeg: bytes) -> bool:
    w, h = Image.open(io.BytesIO(jpeg)).size
    frame = CameraFrame(seq=1, ts=1, width=w, height=h, payload=jpeg)
    return frame_problem(frame, max_bytes=4_000_000, max_pixels=2_000_000) is None


def test_the_exif_bomb_is_reduced_to_its_orientation() -> None:
    plain = encode(picture())
    bomb = with_exif(plain, exif_bomb(6))
    assert len(bomb) > 60_000 and accepted(bomb)  # the header walk lets it through...
    clean = plain_headers(bomb)
    assert len(clean) < len(plain) + 100  # ...and none of the 64 KB reaches a decoder
    img = Image.open(io.BytesIO(clean))
    assert dict(img.getexif()) == {0x0112: 6}
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(io.BytesIO(plain))))
    # the detector sees the turned picture, as it would from the original
    assert signature_from_jpeg(clean).pixels.shape == signature_from_jpeg(bomb).pixels.shape
    assert signature_from_jpeg(clean).pixels.shape[0] > signature_from_jpeg(plain).pixels.shape[0]


def test_metadata_goes_and_what_decoding_needs_stays() -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0112] = 8
    exif[0x8825] = {2: (52.0, 22.0, 1.0), 4: (4.0, 42.0, 0.0)}  # where it was taken
    jpeg = encode(picture(), exif=exif.tobytes(), comment=b"a comment", icc_profile=b"\0" * 600)
    clean = plain_headers(jpeg)
    img = Image.open(io.BytesIO(clean))
    assert dict(img.getexif()) == {0x0112: 8}
    assert "icc_profile" not in img.info and "comment" not in img.info
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(io.BytesIO(jpeg))))
    # upright or no orientation at all: no EXIF of ours
    for value in (1, 9, 0):
        exif[0x0112] = value
        clean = plain_headers(encode(picture(), exif=exif.tobytes()))
        assert dict(Image.open(io.BytesIO(clean)).getexif()) == {}
    # CMYK keeps Adobe's segment, which says how its colours are coded
    cmyk = encode(picture("CMYK"))
    assert b"Adobe" in plain_headers(cmyk)
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(plain_headers(cmyk))).convert("RGB")),
        np.asarray(Image.open(io.BytesIO(cmyk)).convert("RGB")),
    )
    # a frame with nothing to drop is passed on as it is (no copy)
    plain = encode(picture())
    assert plain_headers(plain) is plain


def test_a_decode_error_does_not_name_a_heap_address() -> None:
    det = ChangeDetector()
    try:
        det.observe_jpeg(b"\xff\xd8\xff\xe0" + b"\x00" * 40, t=0.0)
    except ChangeDetectorError as exc:
        assert " at 0x" not in str(exc) and "cannot decode frame" in str(exc)
    else:
        raise AssertionError("a broken frame was decoded")


def test_only_a_cameras_codings_are_accepted() -> None:
    """Baseline and progressive (libjpeg's own scan script) pass; arithmetic coding, which
    an attacker pass decoded 100 times slower than a camera's frame, is refused before
    anything decodes it, as are more scans than a camera writes."""
    from protocol import ErrorCode
    from server.jpeg import MAX_SCANS
    from tests.attacker import many_scans

    img = picture()
    baseline = encode(img)
    progressive = encode(img, progressive=True)
    assert accepted(baseline) and accepted(progressive)
    sof = baseline.index(b"\xff\xc0")
    arithmetic = baseline[:sof] + b"\xff\xc9" + baseline[sof + 2 :]
    w, h = img.size
    frame = CameraFrame(seq=1, ts=1, width=w, height=h, payload=arithmetic)
    problem = frame_problem(frame, max_bytes=4_000_000, max_pixels=2_000_000)
    assert problem is not None and problem[0] == ErrorCode.BAD_MESSAGE
    assert "arithmetic" in problem[1]
    assert progressive.count(b"\xff\xda") <= MAX_SCANS
    assert accepted(many_scans(baseline, MAX_SCANS))
    assert not accepted(many_scans(baseline, MAX_SCANS + 1))


def test_the_orientation_is_found_in_an_unsorted_directory_and_the_first_exif_wins() -> None:
    """Found by a re-check: Android's ExifInterface writes a directory in hash order
    (0x0110, 0x010F, 0x8769, 0x0112, ...), and Pillow reads the first EXIF of several."""

    def ent(tag: int, typ: int, cnt: int, val: bytes) -> bytes:
        return struct.pack("<HHI", tag, typ, cnt) + val

    ents = [
        ent(0x110, 2, 4, b"M1\0\0"),
        ent(0x10F, 2, 4, b"Ph\0\0"),
        ent(0x8769, 4, 1, b"\0" * 4),
        ent(0x112, 3, 1, struct.pack("<HH", 6, 0)),
        ent(0x132, 2, 4, b"x\0\0\0"),
    ]
    tiff = b"II*\0" + struct.pack("<IH", 8, len(ents)) + b"".join(ents) + b"\0" * 4
    jpeg = encode(picture(), exif=b"Exif\0\0" + tiff)
    assert Image.open(io.BytesIO(jpeg)).getexif()[0x112] == 6
    assert Image.open(io.BytesIO(plain_headers(jpeg))).getexif().get(0x112) == 6
    second = Image.Exif()
    second[0x0112] = 3
    later = second.tobytes()  # b"Exif\0\0" and the TIFF block
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + len(later)) + later
    tables = jpeg.index(b"\xff\xdb")
    two = jpeg[:tables] + app1 + jpeg[tables:]
    assert Image.open(io.BytesIO(two)).getexif()[0x112] == 6  # Pillow: the first
    assert Image.open(io.BytesIO(plain_headers(two))).getexif().get(0x112) == 6


def test_headers_longer_than_the_walk_reads_are_refused() -> None:
    """A frame limit configured over 1 MiB must not leave the headers beyond it unchecked
    (a re-check built 2.8 MB of fill bytes after the frame header)."""
    import pytest

    from server.jpeg import JpegHeaderError, jpeg_size

    plain = encode(picture())
    sof = plain.index(b"\xff\xc0")
    padded = plain[:sof] + (b"\xff\xfe\xff\xff" + b"\0" * 65533) * 20 + plain[sof:]
    with pytest.raises(JpegHeaderError, match="headers longer"):
        jpeg_size(padded, max_scan=1 << 20)


def refusal(jpeg: bytes, size: tuple[int, int] = (160, 120)) -> str | None:
    frame = CameraFrame(seq=1, ts=1, width=size[0], height=size[1], payload=jpeg)
    problem = frame_problem(frame, max_bytes=4_000_000, max_pixels=2_000_000)
    return None if problem is None else problem[1]


def test_a_flood_of_quantisation_tables_is_refused_before_pillow_reads_it() -> None:
    """Found by an attacker pass: 15 DQT segments of about 1,000 tables each (64
    segments were allowed, of any size) cost Pillow's Python header reader 170-220 ms a
    frame, holding the GIL, for the model and the text reader every time, and for the
    change detector when it fell back to Pillow. A camera writes two to four."""
    base = encode(picture())
    table = b"\x00" + b"\x01" * 64
    seg = b"\xff\xdb" + (2 + 65 * 1008).to_bytes(2, "big") + table * 1008
    bomb = base[:2] + seg * 15 + base[2:]
    why = refusal(bomb)
    assert why is not None and "quantisation tables" in why
    assert refusal(base) is None
    # a table cut short, or of a kind no decoder knows, is refused too
    cut = b"\xff\xdb" + (2 + 60).to_bytes(2, "big") + table[:60]
    assert "cut short" in (refusal(base[:2] + cut + base[2:]) or "")
    odd = b"\xff\xdb" + (2 + 65).to_bytes(2, "big") + b"\x24" + b"\x01" * 64
    assert "unknown kind" in (refusal(base[:2] + odd + base[2:]) or "")


def test_frames_pillow_cannot_read_are_refused_where_libjpeg_would_have_read_them() -> None:
    """Found by an attacker pass: a 6-byte JFIF segment, which libjpeg (the change
    detector's decoder) reads and Pillow (the vision model's) refuses: every look failed
    as "model-failed", blaming the model. And a 12-bit JPEG got only "cannot identify
    image file". Both are refused before anything decodes them, saying why."""
    base = encode(picture())
    app0_end = 4 + int.from_bytes(base[4:6], "big")
    short_jfif = base[:2] + b"\xff\xe0\x00\x06JFIF" + base[app0_end:]
    assert "too short" in (refusal(short_jfif) or "")
    with pytest.raises(Exception):  # noqa: B017
        Image.open(io.BytesIO(short_jfif))  # what the vision model would have met
    grey = encode(picture("L"))
    sof = grey.index(b"\xff\xc0")
    twelve = bytearray(grey)
    twelve[sof + 1], twelve[sof + 4] = 0xC1, 12
    why = refusal(bytes(twelve))
    assert why is not None and "12-bit" in why, why
    two = bytearray(grey)
    two[sof + 9] = 2
    assert "2 components" in (refusal(bytes(two)) or "")
    assert refusal(grey) is None and refusal(encode(picture("CMYK"))) is None
