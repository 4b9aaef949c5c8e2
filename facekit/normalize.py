"""Stage 4, **normalise**: pixel-unit landmarks → a face shape that does not depend
on where, how large or (optionally) how rotated the face was in the photo.

Modes
-----
``kit`` (version :data:`NORMALISATION_VERSION`)
    nose tip (landmark 1) at the origin, then divided by the face's centroid
    size (root-mean-square distance of the 478 points from their centroid), so
    every face has the same overall size.  Input must be in pixel units
    (x·W, y·H, z·W): that is what makes a 4:3, 16:9 or square photo of the same
    face give the same shape.
``kit`` with ``align=True``
    additionally rotated (about the nose tip) onto a canonical frontal face by
    the least-squares rotation (Kabsch), which removes head roll, yaw and pitch.
``seed``
    the original system's normalisation, reproduced exactly for comparison:
    MediaPipe's normalised coordinates (x/W, y/H, z/W), nose tip subtracted,
    divided by the largest distance from the nose tip.  Needs each photo's size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .paths import ASSETS_DIR

NORMALISATION_VERSION = 1
NOSE_TIP = 1
MODES = ("kit", "seed")


@dataclass(frozen=True)
class NormalizeSettings:
    """``mode`` is ``"kit"`` or ``"seed"``; ``align`` (kit mode only) rotates onto the canonical face."""

    mode: str = "kit"
    align: bool = False
    version: int = NORMALISATION_VERSION

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown normalisation mode {self.mode!r}; choose one of {MODES}")
        if self.mode == "seed" and self.align:
            raise ValueError("mode='seed' reproduces the original system, which had no rotation alignment")


_CANONICAL: np.ndarray | None = None


def canonical_face() -> np.ndarray:
    """(478, 3) float32: a frontal face in ``kit`` units (from scikit-image's public-domain astronaut photo)."""
    global _CANONICAL
    if _CANONICAL is None:
        _CANONICAL = np.load(ASSETS_DIR / "canonical_face.npy").astype(np.float32)
    return _CANONICAL


_CANONICAL64: np.ndarray | None = None


def _canonical64_centred() -> np.ndarray:
    """The canonical face in float64, centred on its centroid, made once (the live path aligns every frame)."""
    global _CANONICAL64
    if _CANONICAL64 is None:
        face = canonical_face().astype(np.float64)
        _CANONICAL64 = face - face.mean(axis=0)
    return _CANONICAL64


def centroid_size(landmarks: np.ndarray) -> np.ndarray:
    """RMS distance of the points from their centroid; (…, 478, 3) → (…,)."""
    centred = landmarks - landmarks.mean(axis=-2, keepdims=True)
    return np.sqrt((centred ** 2).sum(axis=-1).mean(axis=-1))


def kabsch(shapes: np.ndarray, target: np.ndarray, centred: bool = False) -> np.ndarray:
    """Rotation matrices (N, 3, 3) that best map each centred shape onto the centred target (no reflection).

    ``centred=True`` says both are already centred on their centroids (saves two passes).
    """
    a = shapes if centred else shapes - shapes.mean(axis=-2, keepdims=True)
    b = target if centred else target - target.mean(axis=0)
    u, _, vt = np.linalg.svd(np.swapaxes(a, -1, -2) @ b)
    fix = np.ones((len(a), 1, 3))
    fix[:, 0, 2] = np.sign(np.linalg.det(u @ vt))
    return (u * fix) @ vt  # x_row @ R maps a onto b


def normalize(landmarks: np.ndarray, settings: NormalizeSettings = NormalizeSettings(), *,
              width=None, height=None) -> np.ndarray:
    """Normalise faces.

    landmarks: (N, 478, 3) or (478, 3) float, **pixel units** (x·W, y·H, z·W).
    width, height: each photo's full-size upright size (scalars or (N,)); needed by ``seed`` mode.
    Returns float32 of the same shape.  Rows of NaN (failed photos) stay NaN.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    single = lm.ndim == 2
    if single:
        lm = lm[None]
    if lm.shape[-2:] != (478, 3):
        raise ValueError(f"landmarks must be (N, 478, 3) in pixel units, got {landmarks.shape}")
    if settings.mode == "seed":
        if width is None or height is None:
            raise ValueError("mode='seed' needs each photo's width and height (it works in MediaPipe's "
                             "normalised coordinates, as the original system did)")
        w = np.broadcast_to(np.asarray(width, dtype=np.float64), lm.shape[:1])
        h = np.broadcast_to(np.asarray(height, dtype=np.float64), lm.shape[:1])
        lm = lm / np.stack([w, h, w], axis=-1)[:, None, :]
        centred = lm - lm[:, NOSE_TIP:NOSE_TIP + 1]
        max_dist = np.linalg.norm(centred, axis=-1).max(axis=-1)
        out = np.where(max_dist[:, None, None] > 0, centred / np.where(max_dist > 0, max_dist, 1)[:, None, None],
                       centred)
    else:
        # Few, whole-array steps: the live path normalises one face per frame, where each NumPy call's
        # fixed cost (not the arithmetic) is what counts.
        about_centroid = lm - lm.mean(axis=-2, keepdims=True)
        size = np.sqrt(np.einsum("nij,nij->n", about_centroid, about_centroid) / lm.shape[-2])  # centroid size
        scale = (1.0 / np.where(size > 0, size, np.nan))[:, None, None]  # degenerate faces → NaN
        out = (lm - lm[:, NOSE_TIP:NOSE_TIP + 1]) * scale
        if settings.align:
            ok = np.isfinite(out).all(axis=(1, 2))
            if ok.all():
                out = out @ kabsch(about_centroid * scale, _canonical64_centred(), centred=True)
            elif ok.any():
                out[ok] = out[ok] @ kabsch(about_centroid[ok] * scale[ok], _canonical64_centred(), centred=True)
    out = out.astype(np.float32)
    return out[0] if single else out


_MIRROR: np.ndarray | None = None


def mirror_index() -> np.ndarray:
    """(478,) int: the landmark that each landmark becomes in a horizontally flipped photo.

    Found once by matching the canonical face to its own mirror image (an optimal
    one-to-one assignment); it pairs 33↔263 (outer eye corners), 61↔291 (mouth
    corners), 468↔473 (iris centres) and keeps midline points such as the nose tip.
    """
    global _MIRROR
    if _MIRROR is None:
        from scipy.optimize import linear_sum_assignment

        t = canonical_face().astype(np.float64)
        cost = ((t[:, None, :] - (t * [-1, 1, 1])[None]) ** 2).sum(-1)
        _MIRROR = linear_sum_assignment(cost)[1]
    return _MIRROR


def mirror(normalised: np.ndarray) -> np.ndarray:
    """The same faces as in a horizontally flipped photo: x → −x and left/right landmarks swapped.

    Valid for ``kit`` shapes (the nose tip, on the midline, is the origin), aligned or not.
    """
    out = np.asarray(normalised)[..., mirror_index(), :].copy()
    out[..., 0] *= -1
    return out


def flatten(normalised: np.ndarray) -> np.ndarray:
    """(N, 478, 3) → (N, 1434) features, the model's input layout (x0, y0, z0, x1, …)."""
    return np.asarray(normalised, dtype=np.float32).reshape(len(normalised), -1)
