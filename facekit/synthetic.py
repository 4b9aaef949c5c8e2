"""The built-in **synthetic** demo source: landmark data for many made-up people,
so the whole flow runs on a fresh machine with no download.

Nothing here is a photo and nothing here is a real person.  Each synthetic person
is the canonical face (:func:`facekit.normalize.canonical_face`) with its own
smooth identity deformation and its own expressiveness.  Each "photo" is that
face with an expression, a head pose, a size and position in a virtual image
of a smartphone-like size, and landmark jitter like FaceMesh's, returned in pixel
units exactly like :func:`facekit.extract.extract` returns real faces.

Expressions follow what changes in a fearful face (FACS AU1+2+4, AU5, AU20):
inner brows raised and drawn together, upper lids raised, lips stretched.  Neutral
photos leak a little of the same movements, every photo carries some unrelated
movement (smile, brow lowering, mouth opening), and people differ in how strongly
they express.  The defaults make the task learnable but not trivial: logistic
regression on normalised landmarks, tested on held-out people, reaches a
balanced accuracy near 0.85 (``tests/test_synthetic.py`` keeps it in range).

The index has the same columns as an AI Hub index, including Training and
Validation splits with some people in both (as the real download has) and three
simulated annotator votes per photo that disagree more on weak anxious faces.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .index import BASE_COLUMNS
from .labels import ANNOTATORS, EMOTIONS
from .normalize import canonical_face

SOURCE = "synthetic"
# MediaPipe FaceMesh indices (subject's right = image left).
INNER_BROWS = {"right": (55, 65, 107, 66), "left": (285, 295, 336, 296)}
UPPER_LIDS = {"right": (246, 161, 160, 159, 158, 157, 173), "left": (466, 388, 387, 386, 385, 384, 398)}
MOUTH_CORNERS = {"right": 61, "left": 291}
LOWER_LIP = (14, 17, 84, 314, 87, 317, 178, 402)
CANVASES = ((640, 480), (1280, 720), (960, 960), (1080, 1440), (1440, 1080))


def _bump(template: np.ndarray, anchors, sigma: float) -> np.ndarray:
    """(478,) weights: a smooth Gaussian bump around the anchor landmarks."""
    centre = template[list(np.atleast_1d(anchors))]
    d2 = ((template[:, None, :] - centre[None]) ** 2).sum(-1).min(axis=1)
    return np.exp(-d2 / (2 * sigma ** 2))


def expression_fields(template: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Unit displacement fields (478, 3) in ``kit`` units (face about 3 units tall).

    ``brows``, ``lids``, ``lips`` (the anxious movements) and the nuisance movements
    ``smile``, ``frown``, ``open``.  y points down, as in images.
    """
    t = canonical_face() if template is None else template
    f = {k: np.zeros_like(t) for k in ("brows", "lids", "lips", "smile", "frown", "open")}
    for side, sign in (("right", 1.0), ("left", -1.0)):  # sign: towards the midline
        w = _bump(t, INNER_BROWS[side], 0.22)[:, None]
        f["brows"] += w * np.array([0.06 * sign, -0.18, 0.0])
        f["frown"] += w * np.array([0.05 * sign, 0.12, 0.0])
        f["lids"] += _bump(t, UPPER_LIDS[side], 0.08)[:, None] * np.array([0.0, -0.07, 0.0])
        w = _bump(t, MOUTH_CORNERS[side], 0.2)[:, None]
        f["lips"] += w * np.array([-0.13 * sign, 0.04, 0.0])
        f["smile"] += w * np.array([-0.10 * sign, -0.12, 0.03])
    f["open"] += _bump(t, LOWER_LIP, 0.25)[:, None] * np.array([0.0, 0.16, 0.0])
    f["lips"] += _bump(t, LOWER_LIP, 0.2)[:, None] * np.array([0.0, 0.03, 0.0])
    return {k: v.astype(np.float64) for k, v in f.items()}


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def make_index(n_people: int = 120, photos_per_emotion: int = 8, seed: int = 0,
               validation_fraction: float = 0.2, shared_fraction: float = 0.25) -> pd.DataFrame:
    """An index of synthetic photos: ``n_people`` people × (중립, 불안) × ``photos_per_emotion``.

    About ``validation_fraction`` of the people are in Validation, and
    ``shared_fraction`` of those also have photos in Training (as in the real
    download).  Each row carries what :func:`render` needs (``seed``, ``person_id``,
    ``photo_id``) and three simulated annotator votes.
    """
    rng = np.random.default_rng([seed, 10_000_019])
    people = np.arange(n_people)
    n_val = max(1, round(n_people * validation_fraction)) if n_people > 1 else 0
    val = set(rng.choice(people, n_val, replace=False).tolist())
    shared = set(sorted(val)[: max(1 if val else 0, round(len(val) * shared_fraction))])
    others = [e for e in EMOTIONS if e not in ("중립", "불안")]
    rows = []
    for pid in people:
        for emotion in ("중립", "불안"):
            for k in range(photos_per_emotion):
                photo_id = k if emotion == "중립" else 1000 + k
                if pid in shared:
                    split = "Validation" if k % 2 else "Training"
                else:
                    split = "Validation" if pid in val else "Training"
                tag = "TRAIN" if split == "Training" else "VALID"
                r = np.random.default_rng([seed, pid, photo_id, 7])
                strength = _intensity(seed, pid, photo_id) if emotion == "불안" else 0.0
                agree = 0.95 if emotion == "중립" else 0.2 + 0.6 * strength
                votes = [emotion if r.random() < agree else str(r.choice(others + ["중립" if emotion == "불안" else "불안"]))
                         for _ in ANNOTATORS]
                person = f"syn-{pid:04d}"
                rows.append({"source": SOURCE, "split": split, "container": f"synthetic/{split}/{emotion}_{tag}",
                             "member": f"{person}_{photo_id:04d}", "name": f"{person}_{emotion}_{photo_id:04d} (synthetic)",
                             "person": person, "emotion": emotion, "problem": None,
                             "annot_A": votes[0], "annot_B": votes[1], "annot_C": votes[2],
                             "seed": seed, "person_id": int(pid), "photo_id": photo_id})
    df = pd.DataFrame(rows)
    return df[BASE_COLUMNS + [c for c in df.columns if c not in BASE_COLUMNS]]


def _intensity(seed: int, pid: int, photo_id: int) -> float:
    """How strongly an anxious photo shows it, 0.25–1 (weak ones are hard to tell from neutral)."""
    return float(np.random.default_rng([seed, pid, photo_id, 3]).uniform(0.25, 1.0))


def render(index: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Landmarks for synthetic index rows: ((N, 478, 3) float32 pixel units, widths (N,), heights (N,))."""
    template = canonical_face().astype(np.float64)
    fields = expression_fields(template)
    identity_cache: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
    n = len(index)
    out = np.empty((n, 478, 3), dtype=np.float32)
    widths = np.empty(n, dtype=np.int32)
    heights = np.empty(n, dtype=np.int32)
    for i, (seed, pid, photo_id, emotion) in enumerate(
            zip(index["seed"], index["person_id"], index["photo_id"], index["emotion"])):
        seed, pid, photo_id = int(seed), int(pid), int(photo_id)
        if (seed, pid) not in identity_cache:
            identity_cache[(seed, pid)] = _identity(template, seed, pid)
        face, expressive = identity_cache[(seed, pid)]
        r = np.random.default_rng([seed, pid, photo_id])
        if emotion == "불안":
            a = _intensity(seed, pid, photo_id) * expressive
            amounts = {k: a * r.uniform(0.3, 1.0) for k in ("brows", "lids", "lips")}
        else:  # a neutral face is rarely perfectly still
            amounts = {k: abs(r.normal(0, 0.15)) * expressive for k in ("brows", "lids", "lips")}
        amounts.update({"smile": abs(r.normal(0, 0.25)), "frown": abs(r.normal(0, 0.2)),
                        "open": abs(r.normal(0, 0.25))})
        shape = face + sum(amounts[k] * fields[k] for k in amounts)
        rot = _rotation(*np.deg2rad(r.normal(0, [10.0, 8.0, 8.0])))
        shape = (shape - shape[1]) @ rot.T
        w, h = CANVASES[r.integers(len(CANVASES))]
        size = r.uniform(0.08, 0.2) * min(w, h)  # centroid size in pixels
        shape = shape * size
        shape = shape + r.normal(0, 0.012 * size, shape.shape)  # FaceMesh-like jitter
        lo, hi = shape[:, :2].min(0), shape[:, :2].max(0)
        centre = np.array([r.uniform(-lo[0], w - hi[0]), r.uniform(-lo[1], h - hi[1])])
        shape[:, :2] += centre
        shape[:, 2] -= shape[:, 2].mean()  # MediaPipe's z is relative depth
        out[i] = shape
        widths[i], heights[i] = w, h
    return out, widths, heights


def _identity(template: np.ndarray, seed: int, pid: int) -> tuple[np.ndarray, float]:
    """A person's neutral face (kit units) and expressiveness factor."""
    r = np.random.default_rng([seed, pid, 999_983])
    face = template * (1 + r.normal(0, [0.06, 0.06, 0.1]))
    for _ in range(8):  # smooth local differences: eye spacing, nose, mouth, jaw, …
        anchor = r.integers(478)
        face = face + _bump(template, anchor, r.uniform(0.3, 0.8))[:, None] * r.normal(0, 0.06, 3)
    return face, float(r.uniform(0.6, 1.3))


def make_dataset(n_people: int = 120, photos_per_emotion: int = 8, seed: int = 0
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """Index and landmarks together, in the form :func:`facekit.extract.extract` returns."""
    from .extract import extract

    return extract(make_index(n_people, photos_per_emotion, seed), progress=False)
