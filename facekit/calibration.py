"""The **personal-neutral** protocol: each face seen relative to its person's own neutral face.

For every photo, the reference is the mean normalised shape of the *other*
neutral photos of the same person (never the photo itself), and the model sees
``shape − reference``.  A photo whose person has no other neutral photo cannot be
calibrated and is left out (and counted).  This is a different protocol from the
plain one, answering a different question ("given a few neutral photos of this
person, is this one anxious?"); it is always reported beside the plain protocol,
never instead of it.  The live demo's Calibrate button is the same idea.
"""
from __future__ import annotations

import numpy as np


def personal_neutral(shapes: np.ndarray, persons, is_neutral) -> tuple[np.ndarray, np.ndarray]:
    """(delta shapes (N, 478, 3) float32, usable (N,) bool).

    shapes: (N, 478, 3) normalised; persons: (N,) person ids; is_neutral: (N,) bool,
    the photos that may serve as a reference (neutral under the label policy).
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    persons = np.asarray(persons)
    is_neutral = np.asarray(is_neutral, dtype=bool)
    out = np.full(shapes.shape, np.nan)
    usable = np.zeros(len(shapes), bool)
    for person in np.unique(persons):
        rows = np.flatnonzero(persons == person)
        neutral = rows[is_neutral[rows]]
        if len(neutral) == 0:
            continue
        total = shapes[neutral].sum(axis=0)
        for i in rows:
            own = is_neutral[i]
            n = len(neutral) - int(own)
            if n == 0:
                continue
            ref = (total - shapes[i]) / n if own else total / n  # leave the photo itself out
            out[i] = shapes[i] - ref
            usable[i] = True
    return out.astype(np.float32), usable


def reference_shape(neutral_shapes: np.ndarray) -> np.ndarray:
    """The reference for a new person: the mean of their normalised neutral shapes (K, 478, 3) → (478, 3)."""
    neutral_shapes = np.asarray(neutral_shapes, dtype=np.float32)
    if len(neutral_shapes) == 0:
        raise ValueError("calibration needs at least one neutral face")
    return neutral_shapes.mean(axis=0)
