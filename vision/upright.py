"""Turning a decoded frame the way the phone was held.

A phone that stores its picture sideways says so in the EXIF orientation tag. The
change detector, the vision model and the text reader must all see the same
upright picture: when only the detector applied the tag, it saw a turn while the
model and the text reader read the picture on its side.
"""

from __future__ import annotations

from PIL import Image, ImageOps

ORIENTATION = 0x0112
"""The EXIF tag a phone sets when the picture is turned."""


def upright(source: Image.Image, decoded: Image.Image) -> Image.Image:
    """``decoded`` (converted from ``source``) turned as ``source``'s EXIF orientation
    says; most phones set none or 1, and then it is returned as it is."""
    if source.getexif().get(ORIENTATION, 1) in (1, None):
        return decoded
    return ImageOps.exif_transpose(decoded)
