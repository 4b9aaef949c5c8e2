"""The **personal-neutral** protocol: each face seen relative to its person's own neutral face.

The model sees ``shape − reference``, where a photo's reference is the mean normalised shape of some of the
same person's neutral photos, never the photo itself.  Every scored photo's reference averages the same number
of them, n − 1 of the person's n: a neutral photo's reference is all the others, any other photo's all but one.
Equal sizes matter: a mean of n photos is steadier than a mean of n − 1, so a reference of all n for the
non-neutral photos would let the size of the difference alone tell them from the neutral ones, with no
expression in it (TRAINING_DETAIL section 2, item 6).  A person with fewer than two neutral photos has no photo
scored (counted as uncalibrated).  This is a different protocol from the plain one, answering a different
question ("given a few neutral photos of this person, is this one anxious?"); it is always reported beside the
plain protocol, never instead of it.  The live demo's Calibrate button is the same idea.
"""
from __future__ import annotations

import numpy as np

#: The protocols: ``none`` (plain) and ``personal-neutral``.
CALIBRATIONS = ("none", "personal-neutral")


def personal_neutral(shapes: np.ndarray, persons, is_neutral) -> tuple[np.ndarray, np.ndarray]:
    """(delta shapes (N, 478, 3) float32, usable (N,) bool).

    shapes: (N, 478, 3) normalised; persons: (N,) person ids; is_neutral: (N,) bool, the photos that may serve as
    a reference (neutral under the label policy).  For a person with n ≥ 2 neutral photos, a neutral photo's
    reference is the mean of the other n − 1; the k-th of the person's other photos (in row order) leaves out their
    (k mod n)-th neutral photo instead, so the left-out photo goes round and every reference averages n − 1 photos.
    Rows of people with fewer than two neutral photos are NaN and not usable.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    persons = np.asarray(persons)
    is_neutral = np.asarray(is_neutral, dtype=bool)
    out = np.full(shapes.shape, np.nan)
    usable = np.zeros(len(shapes), bool)
    for person in np.unique(persons):
        rows = np.flatnonzero(persons == person)
        neutral = rows[is_neutral[rows]]
        n = len(neutral)
        if n < 2:
            continue
        total = shapes[neutral].sum(axis=0)
        left_out = {i: i for i in neutral}  # a neutral photo leaves itself out …
        left_out.update({i: neutral[k % n] for k, i in enumerate(rows[~is_neutral[rows]])})  # … the others by turns
        for i, j in left_out.items():
            out[i] = shapes[i] - (total - shapes[j]) / (n - 1)
        usable[rows] = True
    return out.astype(np.float32), usable


def reference_shape(neutral_shapes: np.ndarray) -> np.ndarray:
    """The reference for a new person: the mean of their normalised neutral shapes (K, 478, 3) → (478, 3)."""
    neutral_shapes = np.asarray(neutral_shapes, dtype=np.float32)
    if len(neutral_shapes) == 0:
        raise ValueError("calibration needs at least one neutral face")
    return neutral_shapes.mean(axis=0)


def identity_directions(X: np.ndarray, strata, persons, mirror=None) -> np.ndarray:
    """The directions along which the *training* people's faces differ, strongest first: (n_features, r) orthonormal.

    Plain-protocol counterpart of :func:`personal_neutral`, learned from training people alone (TRAINING_DETAIL
    section 7 item 16; nuisance-attribute projection, as in speaker recognition).  Each face ``X`` (N, n_features)
    loses the mean face of its stratum (``strata``: the training rows' emotions or classes), so that what is left is
    mostly who it is; what is left is averaged per person (``persons``); with ``mirror`` (the linear map of
    :func:`facekit.train._mirror_features`) each person's mirror image joins them, so that the leading directions of
    the stack split into symmetric and antisymmetric ones and removing them commutes with mirroring.  The right
    singular vectors of the centred person means follow, at most one fewer than the means, with non-zero
    singular values only.  :func:`remove_directions` takes the first K of them away from any face.
    """
    X = np.asarray(X, dtype=np.float64)
    strata, persons = np.asarray(strata), np.asarray(persons)
    if not (len(X) == len(strata) == len(persons)):
        raise ValueError(f"X, strata and persons must have one row per face: {len(X)}, {len(strata)}, {len(persons)}")
    residual = X.copy()
    for s in np.unique(strata):
        rows = strata == s
        residual[rows] -= X[rows].mean(axis=0)
    people = np.unique(persons)
    means = np.stack([residual[persons == p].mean(axis=0) for p in people])
    if mirror is not None:
        means = np.concatenate([means, mirror(means)])
    means -= means.mean(axis=0)
    _, sv, vt = np.linalg.svd(means, full_matrices=False)
    keep = sv > sv[0] * 1e-9 if len(sv) and sv[0] > 0 else np.zeros(len(sv), bool)
    return vt[keep].T.copy()


def remove_directions(X: np.ndarray, directions: np.ndarray | None, k: int | None = None) -> np.ndarray:
    """``X`` without its components along the first ``k`` (all: ``None``) columns of ``directions`` (orthonormal,
    :func:`identity_directions`): ``x − x V Vᵀ`` row by row, in ``X``'s precision; ``X`` itself where none."""
    if directions is None or k == 0 or directions.shape[1] == 0:
        return X
    V = directions[:, :k].astype(X.dtype, copy=False)
    return X - (X @ V) @ V.T
