"""Every part of the server sees a phone's picture the same way up.

Found by an attacker pass: the change detector applied the EXIF orientation a phone
sets when it stores a picture sideways, but the vision model's decode and the text
reader did not, so the detector saw a turn while the model read the picture on its
side; and the replay client sent photos stored sideways as they were stored."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from seealoud_client.frames import FrameSourceError
from seealoud_client.replay import load_frames
from vision.change import signature_from_jpeg
from vision.engine import _decode


def sideways_jpeg() -> bytes:
    """A 640x480 picture whose EXIF says: turn it 90 degrees (an upright phone)."""
    img = Image.new("RGB", (640, 480), (200, 40, 40))
    img.paste((40, 40, 200), (0, 0, 320, 480))  # left half blue: which way up is visible
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def test_the_model_and_the_detector_see_the_same_upright_picture() -> None:
    jpeg = sideways_jpeg()
    sig = signature_from_jpeg(jpeg, width=80)
    assert sig.pixels.shape == (107, 80)  # portrait: 480x640 scaled to 80 wide
    model_sees = _decode(jpeg, 448)
    assert model_sees.size[0] < model_sees.size[1]  # portrait too
    top, bottom = model_sees.getpixel((10, 5)), model_sees.getpixel((10, model_sees.height - 5))
    assert top != bottom  # blue on one end, red on the other: turned, not squeezed


def test_a_photo_stored_sideways_is_sent_upright(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "000.jpg").write_bytes(sideways_jpeg())
    frames = load_frames(folder)
    assert [(f.width, f.height) for f in frames] == [(480, 640)]
    (folder / "001.jpg").write_bytes(b"not a picture")
    with pytest.raises(FrameSourceError, match=r"001\.jpg"):  # named, not a raw traceback
        load_frames(folder)
