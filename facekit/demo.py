"""Built-in demo photos: a real face bundled with scikit-image, and the photo
variants used to show that normalisation does not depend on how a face was shot.

``skimage.data.astronaut()`` (Eileen Collins, NASA; public domain) ships with
scikit-image, so the demos need no download.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

# The astronaut's head in the 512×512 photo, with a margin (FaceMesh's bounding box × 1.6).
_HEAD_BOX = (140, 40, 310, 210)


def astronaut() -> np.ndarray:
    """(512, 512, 3) uint8 RGB: the full photo (face about 90 px wide)."""
    from skimage import data

    return data.astronaut()


def portrait(size: int = 480) -> np.ndarray:
    """(size, size, 3) uint8 RGB: the astronaut's head, enlarged so the face fills the frame."""
    head = Image.fromarray(astronaut()).crop(_HEAD_BOX)
    return np.asarray(head.resize((size, size), Image.LANCZOS))


def head_crop(rgb: np.ndarray, landmarks: np.ndarray, size: int = 480, margin: float = 1.6) -> np.ndarray:
    """A square crop around a face (its landmark box × ``margin``), resized to ``size`` px.

    Used before :func:`photo_variants` so that the variants keep the face large
    enough for FaceMesh's short-range detector.
    """
    (x0, y0), (x1, y1) = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * margin
    box = tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    return np.asarray(Image.fromarray(rgb).crop(box).resize((size, size), Image.LANCZOS))


def photo_variants(rgb: np.ndarray, background=(90, 90, 90)) -> dict[str, np.ndarray]:
    """The same photo at another size, position, aspect ratio and in-plane rotation.

    Keys: ``original``, ``half size``, ``1.5× size``, ``shifted``, ``16:9 canvas``,
    ``3:4 canvas``, ``rotated 15°``, ``rotated −30°``.
    """
    im = Image.fromarray(rgb)
    w, h = im.size
    out = {"original": im,
           "half size": im.resize((w // 2, h // 2), Image.LANCZOS),
           "1.5× size": im.resize((w * 3 // 2, h * 3 // 2), Image.LANCZOS)}
    for name, (cw, ch), (x, y) in [("shifted", (w * 2, h * 2), (w // 3, h // 2)),
                                   ("16:9 canvas", (w * 16 // 9, h), (w // 3, 0)),
                                   ("3:4 canvas", (w, h * 4 // 3), (0, h // 6))]:
        canvas = Image.new("RGB", (cw, ch), background)
        canvas.paste(im, (x, y))
        out[name] = canvas
    for angle in (15, -30):
        out[f"rotated {angle}°".replace("-", "−")] = im.rotate(angle, resample=Image.BICUBIC, expand=True,
                                                               fillcolor=background)
    return {k: np.asarray(v.convert("RGB")) for k, v in out.items()}
