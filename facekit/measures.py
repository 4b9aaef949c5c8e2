"""Expression measures: 16 distances on the normalised face, each one that a facial action of FACS changes.

``features="measures"`` (``python -m facekit crossval --features measures``, :class:`facekit.crossval.Protocol`,
checkpoints) gives the models these 16 numbers per face instead of the 1,434 landmark coordinates: brows raised or
drawn together, eyes widened, lips stretched, jaw dropped, and so on (:data:`MEASURES` says what each one is).  Each
is measured in the photo's plane (x, y) of the aligned face, on both sides where a face has two (left and right
averaged, so a face and its mirror image give the same measures), and divided by the distance between the outer eye
corners, so a face's size does not enter.

Why a second feature set (TRAINING_DETAIL section 7 item 26): with few people a model of 1,434 coordinates mostly
learns who each face is; 16 measures of what expressions move leave less of that to learn.  On CK+ they rank
neutral against fear almost perfectly (AUC 0.998, also with the photos re-framed); on JAFFE they do worse than the
coordinates.  Fixed before any run on them, not tuned on either set.
"""
from __future__ import annotations

import numpy as np

# MediaPipe FaceMesh indices as (subject's right side, left side) pairs, which facekit.normalize.mirror_index swaps.
# Eyes: outer and inner corner, three points of the upper and of the lower lid, iris centre (the refined mesh's).
# Brows: inner, middle and outer point of the upper edge.
EYE_OUTER, EYE_INNER = (33, 263), (133, 362)
LID_UPPER = ((160, 159, 158), (387, 386, 385))
LID_LOWER = ((144, 145, 153), (373, 374, 380))
IRIS = (468, 473)
BROW_INNER, BROW_MID, BROW_OUTER = (107, 336), (105, 334), (70, 300)
MOUTH_CORNER = (61, 291)
NOSTRIL = (98, 327)
# midline points
LIP_TOP, LIP_UPPER_INNER, LIP_LOWER_INNER, LIP_BOTTOM = 0, 13, 14, 17
NOSE_TIP, SUBNASALE, CHIN = 1, 2, 152

#: name → what it measures (the facial actions that change it most), in the order of :func:`measures`' columns
MEASURES = {
    "brow_inner_height": "inner brow above the inner eye corner (AU1 raises it, AU4 lowers it)",
    "brow_mid_height": "middle of the brow above the eye's centre (AU1+2)",
    "brow_outer_height": "outer brow above the outer eye corner (AU2)",
    "brow_gap": "distance between the two inner brow points (AU4 draws them together)",
    "eye_opening": "upper to lower lid, three points each, over the eye's width (AU5 opens, AU7 narrows)",
    "lid_above_iris": "upper lid above the iris centre (AU5 shows white above the iris)",
    "lid_below_iris": "lower lid below the iris centre (AU7 and AU6 raise it)",
    "mouth_width": "corner to corner (AU20 stretches, AU12 widens)",
    "mouth_opening": "inner upper lip to inner lower lip (AU25, AU26)",
    "jaw_drop": "nose tip to chin (AU26, AU27)",
    "corner_height": "lip corners above the mouth's centre (AU12 raises, AU15 lowers)",
    "corner_to_eye": "lip corner below the lower lid (AU6+12 shorten it, AU15 and AU20 lengthen it)",
    "upper_lip": "outer to inner edge of the upper lip (AU10 and AU23/24 change it)",
    "lower_lip": "inner to outer edge of the lower lip (AU16, AU17)",
    "nose_to_lip": "below the nose to the top of the upper lip (AU10 shortens it)",
    "nostril_width": "between the nostril wings (AU9, AU38)",
}
N_MEASURES = len(MEASURES)
MEASURES_NEED_ALIGNMENT = (
    "the expression measures are heights and widths on the aligned face (kit normalisation with rotation "
    "alignment): unaligned, a tilted head changes them; in seed mode the photo's sides stretch them. Use kit "
    "normalisation with alignment (leave out --no-align and --normalization seed; ALIGN = True in the notebooks)")


def measurable(mode: str, align: bool) -> bool:
    """Whether faces normalised this way can be measured: ``kit`` mode, aligned."""
    return mode == "kit" and bool(align)


def measures(shapes: np.ndarray) -> np.ndarray:
    """(N, 478, 3) normalised faces (``kit`` mode, aligned: x to the photo's right, y down) → (N, 16) float32
    :data:`MEASURES`, each in units of the distance between the outer eye corners, left and right averaged."""
    p = np.asarray(shapes, dtype=np.float64)
    if p.ndim != 3 or p.shape[1:] != (478, 3):
        raise ValueError(f"expression measures need normalised faces of shape (N, 478, 3), got {p.shape}")
    p = p[..., :2]
    y = p[..., 1]
    scale = np.linalg.norm(p[:, EYE_OUTER[0]] - p[:, EYE_OUTER[1]], axis=1)

    def dist(a, b):
        return np.linalg.norm(p[:, a] - p[:, b], axis=1)

    def both(f):
        return (f(0) + f(1)) / 2

    def eye_centre_y(s):
        return (y[:, EYE_OUTER[s]] + y[:, EYE_INNER[s]]) / 2

    def upper_lid_y(s):
        return y[:, list(LID_UPPER[s])].mean(axis=1)

    def lower_lid_y(s):
        return y[:, list(LID_LOWER[s])].mean(axis=1)

    mouth_centre_y = (y[:, LIP_UPPER_INNER] + y[:, LIP_LOWER_INNER]) / 2
    cols = [
        both(lambda s: y[:, EYE_INNER[s]] - y[:, BROW_INNER[s]]),
        both(lambda s: eye_centre_y(s) - y[:, BROW_MID[s]]),
        both(lambda s: y[:, EYE_OUTER[s]] - y[:, BROW_OUTER[s]]),
        dist(BROW_INNER[0], BROW_INNER[1]),
        both(lambda s: (lower_lid_y(s) - upper_lid_y(s)) / dist(EYE_OUTER[s], EYE_INNER[s]) * scale),
        both(lambda s: y[:, IRIS[s]] - upper_lid_y(s)),
        both(lambda s: lower_lid_y(s) - y[:, IRIS[s]]),
        dist(MOUTH_CORNER[0], MOUTH_CORNER[1]),
        dist(LIP_UPPER_INNER, LIP_LOWER_INNER),
        dist(NOSE_TIP, CHIN),
        both(lambda s: mouth_centre_y - y[:, MOUTH_CORNER[s]]),
        both(lambda s: y[:, MOUTH_CORNER[s]] - lower_lid_y(s)),
        dist(LIP_TOP, LIP_UPPER_INNER),
        dist(LIP_LOWER_INNER, LIP_BOTTOM),
        dist(SUBNASALE, LIP_TOP),
        dist(NOSTRIL[0], NOSTRIL[1]),
    ]
    return (np.stack(cols, axis=1) / scale[:, None]).astype(np.float32)
