"""Real clips used as they are, with their events marked by hand.

Everything in ``sequences.py`` is rendered: real photos, a virtual camera and
pasted-in events. These are recorded footage with nothing added, so the
detector is also measured on motion nobody modelled (leaves in wind, a real
hand, the camera's own compression). They take well under a second to build,
so they are not cached.
"""

from __future__ import annotations

import io
from pathlib import Path

from benchmarks.sequences import VIEW, Event, Sequence

TREE_HAND_FRAME = 53
"""``tree.avi`` (15 fps): a tree in wind behind a window frame for 3.5 s, then a
hand reaches in from the top right. Frame 53 is the first one with the
fingertips in view (checked frame by frame)."""


def tree_hand_sequence(data: Path) -> Sequence | None:
    """The tree in wind and the hand, at the clip's own 15 fps, scaled to the view
    size (``None`` when the clip or OpenCV is missing)."""
    video = data / "video" / "tree.avi"
    try:
        import cv2
    except ImportError:
        return None
    if not video.exists():
        return None
    from PIL import Image

    cap = cv2.VideoCapture(str(video))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 15.0)
    frames = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            buf = io.BytesIO()
            Image.fromarray(bgr[:, :, ::-1]).resize(VIEW).save(buf, format="JPEG", quality=80)
            frames.append(buf.getvalue())
    finally:
        cap.release()
    if len(frames) <= TREE_HAND_FRAME:
        return None
    return Sequence(
        name="real-tree-then-hand",
        frames=frames,
        events=[Event(frame=TREE_HAND_FRAME, kind="appear")],
        fps=fps,
        ego_motion=False,
    )


def footage_sequences(data: Path) -> list[Sequence]:
    """The recorded clips that are present."""
    seq = tree_hand_sequence(data)
    return [seq] if seq is not None else []
