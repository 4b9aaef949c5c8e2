"""Cross-validation by person, and the model-selection wrappers the notebooks share.

Every number here comes from people absent from training *and* from model
selection: each outer fold holds out its people; inside it, the epoch count, the
regularisation strength and the decision threshold are chosen by inner folds over
the training part's people only.

    prepared = prepare(table, landmarks, Protocol(task="binary"))
    result = crossval(prepared, folds="loso", model="resnet-mlp")
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import evaluate as ev
from .calibration import identity_directions, personal_neutral, remove_directions
from .checkpoint import features
from .labels import EMOTIONS, apply_policy, encode_task, task_classes
from .measures import N_MEASURES
from .model import ModelConfig
from .normalize import NormalizeSettings, normalize
from .split import _draw_people, person_folds
from .train import TrainConfig, _mirror_features, fit, mirrorable, predict_proba, torch_threads

MODELS = ("resnet-mlp", "logreg", "majority")
CALIBRATIONS = ("none", "personal-neutral")
# --train-on: the classes an anxious-vs-rest model trains on (its own two, or every emotion present)
TRAIN_ON = ("task", "emotions")
# --extra-centre: how each extra training set is placed beside the data's training people before pooling
EXTRA_CENTRES = ("none", "neutral")
# --identity-dims auto: how many of the training people's identity directions the inner folds may remove
# (TRAINING_DETAIL section 7 item 16); 0 (the default) removes none
IDENTITY_DIMS = (0, 4, 16)
# crossval(train_measurements=…, measurement_weight=…): what the further measurements of a photo weigh in logistic
# regression's loss (its own and the ResNet MLP's fitted linear path): "row", each as much as a photo; "photo", all
# of a photo's measurements together as much as one photo (each 1 / (K + 1)), so that C keeps its meaning per photo.
# The MLP's own loss is a mean over its rows either way.  Either way the threshold rule counts photos, not rows
# (TRAINING_DETAIL section 7 item 23).
MEASUREMENT_WEIGHTS = ("row", "photo")
IDENTITY_WITH_EXTRA = ("--identity-dims learns the identity directions from the data's own training people; it is not "
                       "combined with --extra-train, whose people it would not describe: leave one of them out")
NEUTRAL = "중립"


@dataclass(frozen=True)
class Protocol:
    """What a number means: task, label policy, normalisation, feature layout, calibration."""

    task: str = "binary"
    policy: str = "uploader"
    normalization: NormalizeSettings = field(default_factory=lambda: NormalizeSettings("kit", align=True))
    features: str = "xyz"
    calibration: str = "none"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["normalization"] = {k: d["normalization"][k] for k in ("mode", "align", "version")}
        return d


@dataclass
class Prepared:
    """Model-ready data: ``X``/``y``/``groups`` for the task's rows, plus the other-emotion rows."""

    protocol: Protocol
    classes: tuple[str, ...]
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    emotion: np.ndarray
    X_other: np.ndarray
    groups_other: np.ndarray
    emotion_other: np.ndarray
    counts: dict
    rows: np.ndarray = None  # positions in the extract table of the task rows …
    rows_other: np.ndarray = None  # … and of the other-emotion rows

    def subset(self, mask: np.ndarray, mask_other: np.ndarray | None = None) -> "Prepared":
        """The same data restricted to some task rows (and other-emotion rows)."""
        mo = np.ones(len(self.X_other), bool) if mask_other is None else mask_other
        return replace(self, X=self.X[mask], y=self.y[mask], groups=self.groups[mask], emotion=self.emotion[mask],
                       rows=self.rows[mask], X_other=self.X_other[mo], groups_other=self.groups_other[mo],
                       emotion_other=self.emotion_other[mo], rows_other=self.rows_other[mo])


def prepare(table: pd.DataFrame, landmarks: np.ndarray, protocol: Protocol = Protocol()) -> Prepared:
    """From :func:`facekit.extract.extract`'s output to model-ready arrays under ``protocol``."""
    if protocol.calibration not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {protocol.calibration!r}; choose one of {CALIBRATIONS}")
    classes = task_classes(protocol.task)
    ok = (table["status"] == "ok").to_numpy()
    label = apply_policy(table, protocol.policy)
    has_label = label.notna().to_numpy()
    counts = {"n_rows": int(len(table)), "n_failed": int(((table["status"] != "ok") & (table["status"] != "skipped")).sum()),
              "n_unusable_index": int((table["status"] == "skipped").sum()),
              "n_unlabelled": int((ok & ~has_label).sum())}
    keep = ok & has_label
    shapes = normalize(landmarks[keep], protocol.normalization,
                       width=table.loc[keep, "width"].to_numpy(), height=table.loc[keep, "height"].to_numpy())
    lab = label[keep].to_numpy()
    persons = table.loc[keep, "person"].astype(str).to_numpy()
    rows = np.flatnonzero(keep)
    if protocol.calibration == "personal-neutral":
        delta, usable = personal_neutral(shapes, persons, lab == "중립")
        counts["n_uncalibrated"] = int((~usable).sum())
        shapes, delta = shapes[usable], delta[usable]
        lab, persons, rows = lab[usable], persons[usable], rows[usable]
        if protocol.features == "measures":
            # the face's measures less its reference face's, as the Predictor does (the measures of a difference of
            # two faces would mean nothing)
            X = features(shapes, "measures") - features(shapes - delta, "measures")
        else:
            X = features(delta, protocol.features)
    else:
        X = features(shapes, protocol.features)
    y = encode_task(pd.Series(lab), protocol.task)
    in_task = y >= 0
    other = ~in_task & ~pd.isna(lab)
    counts.update({"n_images": int(in_task.sum()), "n_people": int(len(np.unique(persons[in_task]))),
                   "n_other_emotions": int(other.sum())})
    counts["per_class"] = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    return Prepared(protocol, classes, X[in_task], y[in_task], persons[in_task], lab[in_task],
                    X[other], persons[other], lab[other], counts, rows[in_task], rows[other])


def check_learnable(data: Prepared) -> None:
    """A clear ``ValueError`` where ``data`` cannot train and test a model by person: a class of a two-class task
    with no photo (or fewer than two classes with photos), or photos of fewer than two people."""
    per_class = data.counts.get("per_class") or {c: int((data.y == i).sum()) for i, c in enumerate(data.classes)}
    empty = [c for c, n in per_class.items() if n == 0]
    if (empty and len(data.classes) == 2) or len(data.classes) - len(empty) < 2:
        raise ValueError(f"no usable photo labelled {' or '.join(empty)} for task {data.protocol.task!r} (photos per "
                         f"class: {per_class}, label policy {data.protocol.policy!r}); check that the label map "
                         "(--label-map) sends a raw label to each class, and the photos' statuses (extract's table)")
    people = np.unique(data.groups)
    if len(people) < 2:
        raise ValueError(f"the usable photos show {len(people)} person ({', '.join(map(str, people)) or 'none'}); "
                         "testing on people absent from training needs at least 2: check the pattern's "
                         "(?P<person>...) group and the photos' statuses")


def concat_prepared(parts) -> Prepared:
    """Several :class:`Prepared` of one protocol (e.g. ``--extra-train``'s data sets) as one; ``counts`` adds up,
    except ``n_people``, which counts the names once."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    for part in parts[1:]:
        if part.protocol != first.protocol or part.classes != first.classes:
            raise ValueError(f"data sets prepared under {part.protocol} and {first.protocol} cannot be pooled: "
                             "prepare them with the same Protocol")
    arrays = {name: np.concatenate([getattr(p, name) for p in parts])
              for name in ("X", "y", "groups", "emotion", "X_other", "groups_other", "emotion_other")}
    counts = {}
    for part in parts:
        for key, value in part.counts.items():
            if key == "per_class":
                counts[key] = {c: counts.get(key, {}).get(c, 0) + n for c, n in value.items()}
            elif isinstance(value, (int, np.integer)):
                counts[key] = counts.get(key, 0) + int(value)
    counts["n_people"] = int(len(np.unique(arrays["groups"])))
    offsets = np.cumsum([0] + [p.counts.get("n_rows", 0) for p in parts[:-1]])  # rows: positions in the tables
    positions = {name: (np.concatenate([getattr(p, name) + o for p, o in zip(parts, offsets)])
                        if all(getattr(p, name) is not None for p in parts) else None)
                 for name in ("rows", "rows_other")}
    return Prepared(first.protocol, first.classes, counts=counts, **arrays, **positions)


def _extra_rows(data: Prepared, extras: list[Prepared], centre: str):
    """``crossval``'s extra training rows as they travel to each fold: ``(X, y)``, and with ``centre="neutral"``
    also each row's set, which rows are neutral, and (per outer fold, added by :func:`_run_folds`) which of the
    fold's own training rows are neutral: :func:`_plus` then moves each set so that its neutral photos' mean
    face is that of the training side's own neutral photos (the shift is fitted on each training side alone)."""
    X = np.concatenate([e.X for e in extras])
    y = np.concatenate([e.y for e in extras])
    if centre == "none":
        return (X, y)
    missing = [name for name, part in [("the data cross-validated", data)]
               + [(f"extra training set {i + 1}", e) for i, e in enumerate(extras)] if not (part.emotion == NEUTRAL).any()]
    if missing:
        raise ValueError(f"--extra-centre neutral moves each extra set's mean neutral face onto the data's, but "
                         f"{' and '.join(missing)} hold no neutral photo among the task's photos: use "
                         "--extra-centre none, or data with neutral photos")
    sets = np.concatenate([np.full(len(e.y), i) for i, e in enumerate(extras)])
    return (X, y, sets, np.concatenate([e.emotion == NEUTRAL for e in extras]))


def c_grid_tuple(c_grid) -> tuple[float, ...]:
    """A C grid as a sorted tuple of distinct positive floats, or a clear ``ValueError``."""
    try:
        grid = tuple(sorted({float(c) for c in c_grid}))
    except (TypeError, ValueError):
        raise ValueError(f"a C grid is a list of positive numbers, got {c_grid!r}") from None
    if not grid or grid[0] <= 0 or not all(np.isfinite(grid)):
        raise ValueError(f"a C grid is a list of positive numbers, got {c_grid!r}")
    return grid


def _measurement_rows(data: Prepared, measurements: list[Prepared]) -> tuple[np.ndarray, np.ndarray] | None:
    """``crossval(train_measurements=…)``: the other measurements of ``data``'s own photos as rows to add to a
    training side, ``(X, source)``, where ``source`` is each row's position among ``data``'s rows (its photo, hence
    its person and class).  A photo that has no landmarks in ``data`` is left out of every measurement; one that
    lost its face in a measurement is simply not in that one."""
    if not measurements:
        return None
    if data.rows is None:
        raise ValueError("train_measurements needs data prepared by prepare() (each row's position in the extract "
                         "table), to match each photo with its other measurements")
    where = {int(r): i for i, r in enumerate(data.rows)}
    X, source = [], []
    for m in measurements:
        if m.protocol != data.protocol or m.classes != data.classes or m.X.shape[1] != data.X.shape[1]:
            raise ValueError(f"a further measurement was prepared under {m.protocol} with classes {m.classes}, the "
                             f"data under {data.protocol} with {data.classes}: prepare both with the same Protocol")
        if m.rows is None:
            raise ValueError("a further measurement has no row positions: prepare it with prepare()")
        mine = np.array([int(r) in where for r in m.rows], bool)
        src = np.array([where[int(r)] for r in m.rows[mine]], dtype=np.int64)
        if (data.y[src] != m.y[mine]).any() or (data.groups[src] != m.groups[mine]).any():
            raise ValueError("a further measurement gives some photos another class or person than the data do: "
                             "measure the same index (the same photos, in the same order) for both")
        X.append(m.X[mine])
        source.append(src)
    return np.concatenate(X).astype(data.X.dtype, copy=False), np.concatenate(source)


def _training_classes(data: Prepared, train_on: str, model: str, extra) -> tuple[np.ndarray | None, tuple, int | None]:
    """``(y to train on, its class names, the anxious class's index)`` for ``crossval(train_on=…)``: ``(None,
    data.classes, None)`` for the task's own classes; for ``"emotions"``, every emotion among the task's photos
    (in :data:`EMOTIONS`' order), each a class, 불안 the one scored."""
    if train_on == "task" or model == "majority":
        return None, tuple(data.classes), None
    if data.protocol.task != "anxious-vs-rest":
        raise ValueError(f"--train-on emotions trains an anxious-vs-rest model on every emotion present; this run's "
                         f"task is {data.protocol.task!r}: give --task anxious-vs-rest (7class already trains on them)")
    if extra is not None:
        raise ValueError("--train-on emotions with --extra-train is not supported: the extra sets' emotions would "
                         "have to be the data's; run them apart")
    names = [e for e in EMOTIONS if e in set(data.emotion)]
    return (np.array([names.index(e) for e in data.emotion], dtype=np.int64), tuple(EMOTIONS[e] for e in names),
            names.index("불안"))


def _check_extra(data: Prepared, extra: Prepared) -> dict:
    """A clear ``ValueError`` where ``extra`` cannot be trained on beside ``data``: another task, protocol or feature
    width, no photo, or a photo that is also in ``data`` (identical landmarks: the same file given twice, which
    would put a test person into training).  Returns what the result records of it."""
    if extra.protocol != data.protocol or extra.classes != data.classes or extra.X.shape[1] != data.X.shape[1]:
        raise ValueError(f"the extra training data were prepared under {extra.protocol} with classes {extra.classes}, "
                         f"the data under {data.protocol} with classes {data.classes}: prepare both with the same "
                         "Protocol")
    if len(extra.y) == 0:
        raise ValueError(f"the extra training data hold no usable photo for task {data.protocol.task!r} (counts: "
                         f"{extra.counts}); check their labels and the photos' statuses")
    both = {row.tobytes() for row in data.X} & {row.tobytes() for row in extra.X}
    if both:
        raise ValueError(f"{len(both)} photo(s) of the extra training data are also in the data cross-validated (the "
                         "same landmarks): their people would be trained and tested on; give extra data of other "
                         "people only")
    shared = sorted(set(map(str, data.groups)) & set(map(str, extra.groups)))
    if shared:
        warnings.warn(f"{len(shared)} person name(s) are in both the data and the extra training data "
                      f"({', '.join(shared[:5])}{', …' if len(shared) > 5 else ''}): if they are the same people, "
                      "the results are not person-held-out; give extra data of other people only", stacklevel=3)
    return {**extra.counts, "shared_person_names": shared}


def _check_training_parts(data: Prepared, splits, folds) -> None:
    """A clear ``ValueError`` where an outer fold's training part cannot choose a model on inner person folds:
    fewer than two people in it, or a class with no photo in it (the held-out person holds them all)."""
    for k, (tr, _) in enumerate(splits):
        people = np.unique(data.groups[tr])
        missing = [c for i, c in enumerate(data.classes) if not (data.y[tr] == i).any()]
        if len(people) < 2:
            raise ValueError(f"fold {k} of --folds {folds} trains on {len(people)} person ({people[0]}); choosing the "
                             "model on inner folds by person needs at least 2 training people per fold: give "
                             f"photos of more people (this data has {len(np.unique(data.groups))}), or use "
                             "--model majority")
        if missing and len(data.classes) == 2:
            raise ValueError(f"fold {k} of --folds {folds} has no training photo labelled {' or '.join(missing)} "
                             "(the people held out in that fold have all of them); give photos of that class "
                             "from more people, or fewer folds")


# ----------------------------------------------------------------------------- model selection

MIN_PER_CLASS_FOR_THRESHOLD = 20

# Feature layouts the inner folds choose between when the protocol's features are ``xyz``.  MediaPipe's
# z is a depth guessed from one photo, noisier than x and y; whether it helps is decided per training part
# on that part's own people (``layouts="xyz"`` turns the choice off).
LAYOUTS = ("xyz", "xy")

# The cross-validation's ResNet MLP has the linear path (``linear_skip``): made the default by a rule fixed
# before its results (TRAINING_DETAIL section 7): CK+ outer balanced accuracy within 0.01 of the model
# without it and mean inner selection scores on JAFFE and CK+ not lower.  ``ModelConfig()`` itself keeps
# it off, so checkpoints written before the field existed load unchanged.
DEFAULT_MODEL_CONFIG = ModelConfig(linear_skip=True)


#: How the MLP's linear path (``ModelConfig.linear_skip``) gets its weights: ``fitted``, the logistic
#: regression that :class:`SelectedLogReg` selects on the same inner folds, then frozen, with the deep part
#: learning the rest (epoch 0 = the linear model alone); ``trained``, with the rest of the network;
#: ``auto``, the inner folds choose between the two (the candidates of both, scored alike).
LINEAR_PATHS = ("fitted", "trained", "auto")
#: ``auto`` since the ninth session (TRAINING_DETAIL section 7, item 11): choosing among the candidates of both
#: on the inner folds cannot give a lower inner selection score than either alone, the rule of item 9.
DEFAULT_LINEAR_PATH = "auto"

#: Whether training faces are also used mirrored (x → −x, left/right landmarks swapped): the inner folds
#: choose, for both models alike.  A face differs from its own mirror image by about as much as fear
#: differs from neutral (JAFFE: median distance 0.62 against 0.61 between the class means, normalised
#: units), so whether the mirrored copies help or blur the signal is a question for the training people.
MIRRORS = (True, False)


def _mirrors(mirror, flip_matters: bool = True) -> tuple[bool, ...]:
    """``"auto"`` → both; ``"on"``/``True`` → mirrored copies only; ``"off"``/``False`` → none.  With features
    that are their own mirror image (``flip_matters`` false, :func:`facekit.train.mirrorable`: the expression
    measures) only none: ``"auto"`` has nothing to choose."""
    if not flip_matters:
        if mirror in (True, "on", "true", "yes"):
            raise ValueError("the expression measures (features 'measures') are the same for a face and its mirror "
                             "image, so mirrored copies add nothing: use mirror 'auto' or 'off'")
        _mirrors(mirror)  # still reject a value that is not a setting
        return (False,)
    if mirror in (None, "auto"):
        return MIRRORS
    if mirror in (True, "on", "true", "yes"):
        return (True,)
    if mirror in (False, "off", "false", "no"):
        return (False,)
    raise ValueError(f"mirror must be 'auto', 'on' or 'off', got {mirror!r}")


def _identity_grid(identity_dims) -> tuple[int, ...]:
    """The counts of identity directions the inner folds choose among: ``"auto"`` → :data:`IDENTITY_DIMS`, a
    count K → ``(K,)``; ``0`` / ``None`` / ``"off"`` → ``(0,)`` (none removed)."""
    if identity_dims in (None, "off", "none"):
        return (0,)
    if identity_dims == "auto":
        return IDENTITY_DIMS
    text = str(identity_dims).strip()
    if isinstance(identity_dims, bool) or not text.isdigit():
        raise ValueError(f"identity_dims must be 'auto', 'off' or a count of directions >= 0, got {identity_dims!r}")
    return (int(text),)


def _identity_fold(X_tr, X_va, strata, groups, dims: int, mirror_map=_mirror_features):
    """One training side's rows and the rows it is scored on, both without the side's first ``dims`` identity
    directions (:func:`facekit.calibration.identity_directions`, learned from the training side alone); as they are
    where ``dims`` is 0.  Returns ``(X_tr, X_va, directions)``."""
    if not dims:
        return X_tr, X_va, None
    directions = identity_directions(X_tr, strata, groups, mirror_map)[:, :dims]
    return remove_directions(X_tr, directions), remove_directions(X_va, directions), directions


def _layouts(layouts, n_features: int) -> tuple[str, ...]:
    if n_features != 478 * 3:  # the protocol already chose ``xy`` or the measures
        return ("xy",) if n_features == 478 * 2 else ("measures",) if n_features == N_MEASURES else ("xyz",)
    if layouts in (None, "auto"):
        return LAYOUTS
    chosen = tuple(layouts.split(",")) if isinstance(layouts, str) else tuple(layouts)
    unknown = set(chosen) - set(LAYOUTS)
    if unknown:
        raise ValueError(f"unknown feature layout(s) {sorted(unknown)}; choose from {LAYOUTS}")
    return chosen


def _columns(layout: str, n_features: int):
    """Columns of an ``xyz`` feature matrix that make ``layout`` (all of them for its own layout)."""
    if layout == "xy" and n_features == 478 * 3:
        return np.arange(n_features).reshape(478, 3)[:, :2].ravel()
    return slice(None)


def _threshold(y: np.ndarray, p_pos: np.ndarray, min_recall: float | None = None, measurements: int = 1) -> float:
    """Threshold chosen on out-of-fold validation probabilities, or 0.5 (the class-balanced
    training's natural cut) when either class has fewer than 20 validation photos: on so few
    the chosen cut is mostly noise (measured on JAFFE: it cost ~0.1 balanced accuracy).
    ``measurements``: rows per photo (``crossval(train_measurements=…)``: K + 1), so that photos, not
    measurements, are counted.  ``min_recall``: instead, the highest cut whose out-of-fold anxious recall is
    at least that (:func:`facekit.evaluate.threshold_for_recall`), whatever the counts: an operating point asked for."""
    if min_recall is not None:
        return ev.threshold_for_recall(y, p_pos, min_recall)
    if np.bincount(y, minlength=2).min() / measurements < MIN_PER_CLASS_FOR_THRESHOLD:
        return 0.5
    return ev.choose_threshold(y, p_pos)


def _thresholds(y: np.ndarray, p_pos: np.ndarray, min_recall: float | None,
                measurements: int = 1) -> tuple[float, dict]:
    """The threshold to use and what ``selected_`` records of it: with ``min_recall`` also the
    balanced-accuracy threshold the same probabilities give, so one run reports both operating points.
    ``measurements``: rows per photo (:func:`_threshold`)."""
    threshold = _threshold(y, p_pos, min_recall, measurements)
    extra = {} if min_recall is None else {"threshold_balanced": _threshold(y, p_pos, None, measurements),
                                           "min_recall": min_recall,
                                           "threshold_n_anxious": int(round((np.asarray(y) == 1).sum() / measurements))}
    return threshold, extra


def _inner_folds(groups: np.ndarray, inner, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner person folds of a training part: ``"auto"`` is leave-one-person-out up to 30
    people (on fewer, 3 folds gave noisy choices: JAFFE logreg 0.70 vs 0.81 balanced
    accuracy) and 5 folds above; a number K gives K folds; 1 a single 20% validation draw."""
    people = len(np.unique(groups))
    if str(inner).lower() == "auto":
        inner = "loso" if people <= 30 else 5
    if str(inner).lower() == "loso":
        return person_folds(groups, "loso")
    inner = int(inner)
    if inner <= 1 or people < 3:
        val = _draw_people(groups, 0.2, seed)
        return [(np.flatnonzero(~val), np.flatnonzero(val))]
    return person_folds(groups, min(inner, people), seed=seed)


class SelectedResNetMLP:
    """ResNet MLP whose feature layout, mirroring, epoch count and threshold are chosen on inner person folds.

    For each candidate layout (:data:`LAYOUTS`) each inner fold trains on the
    ``epochs`` schedule and keeps its validation probabilities per epoch; the
    pooled out-of-fold balanced accuracy per epoch (smoothed over 5 epochs) picks
    the layout and the epoch, as logistic regression's C is picked.  The model is
    then retrained on all training people on the same schedule up to that epoch,
    and the threshold is chosen on the pooled out-of-fold probabilities at that epoch.
    ``ensemble`` > 1 retrains that many models (seeds ``random_state`` + 0, 1, …) and
    averages their probabilities: on a few dozen photos one network's answers
    depend on its seed almost as much as on the data.  ``model_config`` may be a
    sequence of configs (e.g. with and without the linear path): the inner folds
    then choose among them as among the layouts, each candidate multiplying the time.
    ``mirror``: ``"auto"`` lets the inner folds choose whether training faces are also used
    mirrored (:data:`MIRRORS`); ``"on"``/``"off"`` fixes it.
    ``linear_path`` (for configs with ``linear_skip``): ``"fitted"`` fits the linear path
    as :class:`SelectedLogReg` does (its feature layout, mirroring and C chosen on the same
    inner folds) and freezes it (``TrainConfig.linear_C``); the deep part then learns what
    it leaves, and the epoch count, 0 (the linear model alone) included, is chosen as
    before.  ``"trained"``: the linear path is trained with the rest, and the inner folds
    choose the layout and mirroring for the MLP itself.  ``"auto"``: both families of
    candidates (``trained``'s layouts × mirrorings and ``fitted``'s one) are scored alike on the
    same inner folds, and the best candidate and epoch win (``selected_["linear_path"]`` says which).
    ``identity_dims``: every face first loses that many of the training people's identity directions
    (:class:`SelectedLogReg`'s); ``"auto"``: as many as logistic regression's inner folds choose (the one the
    ``fitted`` family fits), for every candidate; each inner fold learns the directions from its own training people.
    """

    directions_ = None  # as SelectedLogReg's

    def __init__(self, n_classes: int, model_config: ModelConfig | tuple = DEFAULT_MODEL_CONFIG,
                 train_config: TrainConfig = TrainConfig(), inner_folds="auto", random_state: int = 0,
                 layouts="auto", ensemble: int = 1, mirror="auto", linear_path: str = DEFAULT_LINEAR_PATH,
                 min_recall: float | None = None, positive: int | None = None, identity_dims=0,
                 measurements: int = 1, measurement_weight: str = "row", c_grid=None):
        if linear_path not in LINEAR_PATHS:
            raise ValueError(f"linear_path must be one of {LINEAR_PATHS}, got {linear_path!r}")
        self.n_classes, self.model_config, self.train_config = n_classes, model_config, train_config
        self.inner_folds, self.random_state, self.layouts = inner_folds, random_state, layouts
        self.ensemble = max(1, int(ensemble))
        self.mirror = mirror
        self.linear_path = linear_path
        self.min_recall = min_recall
        self.positive = positive
        self.identity_dims = identity_dims
        self.measurements, self.measurement_weight = measurements, measurement_weight  # as SelectedLogReg's
        self.c_grid = c_grid  # the fitted linear path's (SelectedLogReg's) C grid

    def fit(self, X, y, groups, extra=None, strata=None):
        """``extra``: the rows of :func:`_extra_rows` (``(X, y)`` of photos from other people, ``crossval(extra=…)``,
        and what centring needs) added to the training side of every inner fold and of the final model, never
        validated on.  ``strata``: the rows' emotions, for the identity directions (``identity_dims``)."""
        tc = replace(self.train_config, seed=self.random_state)
        folds = _inner_folds(groups, self.inner_folds, self.random_state)
        oof_y = np.concatenate([y[va] for _, va in folds])
        configs = _model_configs(self.model_config)
        best = None
        self.inner_curves_ = {}
        self.inner_scores_ = {}
        layouts, mirrors = _layouts(self.layouts, X.shape[1]), _mirrors(self.mirror, mirrorable(X))
        # candidate families: (how the linear path is made, layouts, mirrorings, training config)
        families = []
        dims_grid = _identity_grid(self.identity_dims)
        if any(dims_grid) and extra is not None:
            raise ValueError(IDENTITY_WITH_EXTRA)
        strata = y if strata is None else np.asarray(strata)
        with_fitted = self.linear_path in ("fitted", "auto") and any(c.has_linear_path for c in configs)
        linear = None
        if with_fitted or len(dims_grid) > 1:  # the fitted path, or the identity directions, need it
            linear = SelectedLogReg(self.n_classes, self.inner_folds, self.random_state, self.layouts,
                                    self.mirror, positive=self.positive,
                                    identity_dims=self.identity_dims,
                                    measurements=self.measurements,
                                    measurement_weight=self.measurement_weight,
                                    c_grid=self.c_grid).fit(X, y, groups, extra, strata)
        dims = linear.identity_dims_ if linear is not None else dims_grid[0]
        if self.linear_path in ("trained", "auto") or not any(c.has_linear_path for c in configs):
            families.append(("trained", layouts, mirrors, tc))
        if with_fitted:
            families.append(("fitted", (linear.layout_,), (linear.mirror_,),
                             replace(tc, linear_C=linear.C_ / linear._c_scale)))
        for family, fam_layouts, fam_mirrors, fam_tc in families:
            for c, config in enumerate(configs):
                if family == "fitted" and not config.has_linear_path and len(families) > 1:
                    continue  # ``auto``: the trained family already has this config
                for layout in fam_layouts:
                    Xl = X[:, _columns(layout, X.shape[1])]
                    Xe = None if extra is None else extra[0][:, _columns(layout, X.shape[1])]
                    # each inner fold's rows without its own training people's identity directions (none: as they are)
                    sides = [_identity_fold(Xl[tr], Xl[va], strata[tr], groups[tr], dims)[:2] for tr, va in folds]
                    mc = replace(config, n_features=Xl.shape[1], n_classes=self.n_classes)
                    # epoch 0: the fitted linear path alone
                    first = 0 if fam_tc.linear_C is not None and mc.has_linear_path else 1
                    for mirror in fam_mirrors:
                        tcm = replace(fam_tc, mirror=mirror)
                        probas = []
                        for (tr, va), (X_tr, X_va) in zip(folds, sides):
                            _, hist = fit(*_plus(X_tr, y[tr], Xe, extra, tr), X_va, y[va], mc, tcm,
                                          keep_val_proba=True)
                            probas.append(np.stack([h["val_proba"] for h in hist]))
                        oof = np.concatenate(probas, axis=1)  # (epochs, out-of-fold rows, classes)
                        curve = np.array([_balanced_accuracy(oof_y, p, self.positive) for p in oof])
                        smooth = pd.Series(curve).rolling(5, center=True, min_periods=1).mean().to_numpy()
                        epoch = int(np.nanargmax(smooth)) + first
                        name = layout if len(configs) == 1 else f"{layout}/config{c}"
                        name += "" if len(fam_mirrors) == 1 else ("/mirror" if mirror else "/no-mirror")
                        name += "/fitted" if len(families) > 1 and family == "fitted" else ""
                        self.inner_curves_[name] = curve
                        self.inner_scores_[name] = float(smooth[epoch - first])
                        if best is None or smooth[epoch - first] > best[0]:
                            best = (float(smooth[epoch - first]), layout, epoch, oof[epoch - first], mc, c, mirror,
                                    tcm)
        score, self.layout_, self.epoch_, oof_p, mc, self.config_index_, self.mirror_, tc = best
        self.linear_C_ = tc.linear_C if mc.has_linear_path else None
        self.columns_ = _columns(self.layout_, X.shape[1])
        y2, p2 = _one_vs_rest(oof_y, oof_p, self.positive)
        self.threshold_, threshold_extra = (_thresholds(y2, p2[:, 1], self.min_recall, self.measurements)
                                            if p2.shape[1] == 2 else (None, {}))
        Xe = None if extra is None else extra[0][:, self.columns_]
        Xc = X[:, self.columns_]
        self.identity_dims_ = dims
        self.directions_ = identity_directions(Xc, strata, groups, _mirror_features)[:, :dims] if dims else None
        Xc = remove_directions(Xc, self.directions_)
        self.models_ = [fit(*_plus(Xc, y, Xe, extra), None, None, mc,
                            replace(tc, stop_epoch=self.epoch_, seed=self.random_state + k))[0]
                        for k in range(self.ensemble)]
        self.model_ = self.models_[0]
        self.selected_ = {"layout": self.layout_, "epoch": self.epoch_, "threshold": self.threshold_,
                          "inner_val_bal_acc": score, "ensemble": self.ensemble,
                          "linear_skip": mc.linear_skip, "mirror": self.mirror_, "inner_scores": self.inner_scores_,
                          "linear_path": ("fitted" if self.linear_C_ is not None
                                          else "trained" if mc.has_linear_path else None),
                          "linear_C": self.linear_C_, **threshold_extra}
        if len(configs) > 1:
            self.selected_["model_config"] = self.config_index_
        if dims_grid != (0,):
            self.selected_["identity_dims"] = int(dims)
            self.selected_["identity_dims_removed"] = 0 if self.directions_ is None else int(self.directions_.shape[1])
            if linear is not None and "inner_scores_by_identity_dims" in linear.selected_:
                self.selected_["linear_inner_scores_by_identity_dims"] = linear.selected_["inner_scores_by_identity_dims"]
        return self

    def predict_proba(self, X):
        Xc = remove_directions(X[:, self.columns_], self.directions_)
        p = np.mean([predict_proba(m, Xc) for m in self.models_], axis=0)
        return _one_vs_rest(None, p, self.positive)[1]


def _plus(X: np.ndarray, y: np.ndarray, X_extra: np.ndarray | None, extra, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """A training side's rows followed by the extra training rows (``X_extra``: ``extra``'s in the same columns).
    ``rows``: where ``X`` sits among the rows the model's ``fit`` was given (``None``: all of them).  With
    centring (``extra`` of :func:`_extra_rows` with ``--extra-centre neutral``), each extra set is first moved so
    that the mean of its neutral faces is the mean of this training side's own neutral faces."""
    if extra is None:
        return X, y
    if len(extra) > 2:
        _, _, sets, neutral_extra, neutral_data = extra
        own = neutral_data if rows is None else neutral_data[rows]
        if not own.any():
            raise ValueError("a training side holds no neutral photo of the data's own people, so --extra-centre "
                             "neutral has nothing to centre the extra sets on: use --extra-centre none, or fewer "
                             "folds (more people in each training side)")
        target = X[own].mean(axis=0)
        X_extra = X_extra.astype(X.dtype)  # a copy, in the data's precision
        for s in np.unique(sets):
            X_extra[sets == s] += target - X_extra[(sets == s) & neutral_extra].mean(axis=0)
    return np.concatenate([X, X_extra]), np.concatenate([y, extra[1]])


def _one_vs_rest(y, p: np.ndarray, positive: int | None):
    """``(y, p)`` of a model trained on several classes, as the two-class problem ``positive`` against the rest
    (labels 1 / 0; probabilities ``[1 - p_positive, p_positive]``); unchanged where ``positive`` is ``None``."""
    if positive is None:
        return y, p
    pp = p[..., positive]
    return (None if y is None else (np.asarray(y) == positive).astype(np.int64)), np.stack([1 - pp, pp], axis=-1)


def _balanced_accuracy(y: np.ndarray, p: np.ndarray, positive: int | None) -> float:
    """Balanced accuracy of the class with the highest probability; with ``positive``, of "is it ``positive``?"
    (the highest of all the classes trained on), as the two-class problem ``positive`` against the rest."""
    if positive is None:
        return ev.skm.balanced_accuracy_score(y, p.argmax(1))
    return ev.skm.balanced_accuracy_score(np.asarray(y) == positive, p.argmax(1) == positive)


def _reported_configs(model_config, layouts, n_features: int, n_classes: int) -> list[dict]:
    """The candidate configs as each fold's models are built from them: the width of the features they get (one
    number, or one per layout where the inner folds choose between layouts) and the number of training classes,
    not the template's placeholders."""
    widths = sorted({int(np.arange(n_features)[_columns(layout, n_features)].size) for layout in layouts},
                    reverse=True)
    return [{**c.to_dict(), "n_features": widths[0] if len(widths) == 1 else widths, "n_classes": n_classes}
            for c in _model_configs(model_config)]


def _model_configs(model_config) -> tuple[ModelConfig, ...]:
    """One ModelConfig, or a sequence of them for the inner folds to choose from."""
    return (model_config,) if isinstance(model_config, ModelConfig) else tuple(model_config)


class SelectedLogReg:
    """Standardised logistic regression (class-balanced) with the feature layout, mirroring, C and threshold
    chosen on inner person folds (the same layouts and mirroring choice as :class:`SelectedResNetMLP`).
    ``identity_dims`` (:func:`_identity_grid`): how many of the training people's identity directions every face
    loses first (:func:`facekit.calibration.identity_directions`; ``"auto"``: the inner folds choose among
    :data:`IDENTITY_DIMS`, each inner fold learning the directions from its own training people)."""

    GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    directions_ = None  # the identity directions a fitted model removes (none, also for a model assembled by hand)

    def __init__(self, n_classes: int, inner_folds="auto", random_state: int = 0, layouts="auto", mirror="auto",
                 min_recall: float | None = None, positive: int | None = None, identity_dims=0,
                 measurements: int = 1, measurement_weight: str = "row", c_grid=None):
        self.n_classes, self.inner_folds, self.random_state = n_classes, inner_folds, random_state
        self.grid = c_grid_tuple(c_grid) if c_grid is not None else self.GRID  # the Cs the inner folds choose among
        self.layouts, self.mirror, self.min_recall, self.positive = layouts, mirror, min_recall, positive
        self.identity_dims = identity_dims
        # measurements: rows per photo (crossval's train_measurements: K + 1), for the threshold rule's photo count;
        # with measurement_weight "photo" each row also weighs 1 / measurements in the loss (C / measurements), so a
        # photo measured that many times counts as one photo (MEASUREMENT_WEIGHTS); C_ and GRID stay per photo
        self.measurements, self.measurement_weight = measurements, measurement_weight

    @property
    def _c_scale(self) -> float:
        return self.measurements if self.measurement_weight == "photo" else 1

    def _fit(self, C, X, y, mirror: bool):
        if mirror:  # the training faces and their mirror images, as the MLP's training sees them
            X, y = np.concatenate([X, _mirror_features(X)]), np.concatenate([y, y])
        return self._make(C).fit(X, y)

    def _make(self, C):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=C / self._c_scale, max_iter=3000,
                                                                  class_weight="balanced"))

    def _proba(self, clf, X):
        out = np.zeros((len(X), self.n_classes))
        out[:, clf.classes_] = clf.predict_proba(X)
        return out

    def fit(self, X, y, groups, extra=None, strata=None):
        """``extra``: the rows of :func:`_extra_rows`, added to every training side, never validated on (as
        :class:`SelectedResNetMLP`).  ``strata``: the rows' emotions, whose mean faces the identity directions
        are learned without (``identity_dims``; default: ``y``)."""
        folds = _inner_folds(groups, self.inner_folds, self.random_state)
        dims_grid = _identity_grid(self.identity_dims)
        if any(dims_grid) and extra is not None:
            raise ValueError(IDENTITY_WITH_EXTRA)
        strata = y if strata is None else np.asarray(strata)
        candidates = []  # (score, layout, mirror, identity dims, C, out-of-fold y, out-of-fold probabilities)
        for layout in _layouts(self.layouts, X.shape[1]):
            Xl = X[:, _columns(layout, X.shape[1])]
            Xe = None if extra is None else extra[0][:, _columns(layout, X.shape[1])]
            # each inner fold's identity directions, from its own training people, at the largest count asked
            sides = [_identity_fold(Xl[tr], Xl[va], strata[tr], groups[tr], max(dims_grid)) for tr, va in folds]
            for mirror in _mirrors(self.mirror, mirrorable(X)):
                for dims in dims_grid:
                    for C in self.grid:
                        oof_y, oof_p = [], []
                        for (tr, va), (_, _, directions) in zip(folds, sides):
                            X_tr, y_tr = _plus(remove_directions(Xl[tr], directions, dims), y[tr], Xe, extra, tr)
                            if len(np.unique(y_tr)) < 2:
                                continue
                            clf = self._fit(C, X_tr, y_tr, mirror)
                            oof_y.append(y[va])
                            oof_p.append(self._proba(clf, remove_directions(Xl[va], directions, dims)))
                        oy, op = np.concatenate(oof_y), np.concatenate(oof_p)
                        score = (ev.classification_report(oy, op, tuple(map(str, range(self.n_classes))))
                                 ["balanced_accuracy"]
                                 if self.positive is None else _balanced_accuracy(oy, op, self.positive))
                        candidates.append((score, layout, mirror, dims, C, oy, op))
        best = int(np.nanargmax([c[0] for c in candidates]))
        score, self.layout_, self.mirror_, self.identity_dims_, self.C_, oy, op = candidates[best]
        self.columns_ = _columns(self.layout_, X.shape[1])
        y2, p2 = _one_vs_rest(oy, op, self.positive)
        self.threshold_, threshold_extra = (_thresholds(y2, p2[:, 1], self.min_recall, self.measurements)
                                            if p2.shape[1] == 2 else (None, {}))
        Xe = None if extra is None else extra[0][:, self.columns_]
        Xc = X[:, self.columns_]
        self.directions_ = (identity_directions(Xc, strata, groups, _mirror_features)[:, :self.identity_dims_]
                            if self.identity_dims_ else None)
        self.model_ = self._fit(self.C_, *_plus(remove_directions(Xc, self.directions_), y, Xe, extra), self.mirror_)
        self.selected_ = {"layout": self.layout_, "mirror": self.mirror_, "C": self.C_, "threshold": self.threshold_,
                          "inner_val_bal_acc": float(score), **threshold_extra}
        if dims_grid != (0,):
            self.selected_["identity_dims"] = int(self.identity_dims_)
            self.selected_["identity_dims_removed"] = 0 if self.directions_ is None else int(self.directions_.shape[1])
            # the best inner score each count of directions reached (over layouts, mirroring and C)
            self.selected_["inner_scores_by_identity_dims"] = {
                str(d): float(max(c[0] for c in candidates if c[3] == d)) for d in dims_grid}
        return self

    def predict_proba(self, X):
        Xc = remove_directions(X[:, self.columns_], self.directions_)
        return _one_vs_rest(None, self._proba(self.model_, Xc), self.positive)[1]


class Majority:
    """The majority-class baseline: always the most frequent training class."""

    def __init__(self, n_classes: int, **_):
        self.n_classes = n_classes

    def fit(self, X, y, groups, extra=None):
        y = y if extra is None else np.concatenate([y, extra[1]])
        self.class_ = int(np.bincount(y, minlength=self.n_classes).argmax())
        self.threshold_ = None
        self.selected_ = {"class": self.class_}
        return self

    def predict_proba(self, X):
        out = np.zeros((len(X), self.n_classes))
        out[:, self.class_] = 1.0
        return out


def make_model(kind: str, n_classes: int, seed: int = 0, inner_folds="auto",
               model_config: ModelConfig = DEFAULT_MODEL_CONFIG, train_config: TrainConfig = TrainConfig(),
               layouts="auto", ensemble: int = 1, mirror="auto", linear_path: str = DEFAULT_LINEAR_PATH,
               min_recall: float | None = None, positive: int | None = None, identity_dims=0,
               measurements: int = 1, measurement_weight: str = "row", c_grid=None):
    if kind == "resnet-mlp":
        return SelectedResNetMLP(n_classes, model_config, train_config, inner_folds, seed, layouts, ensemble, mirror,
                                 linear_path, min_recall, positive, identity_dims, measurements, measurement_weight,
                                 c_grid)
    if kind == "logreg":
        return SelectedLogReg(n_classes, inner_folds, seed, layouts, mirror, min_recall, positive, identity_dims,
                              measurements, measurement_weight, c_grid)
    if kind == "majority":
        return Majority(n_classes)
    raise ValueError(f"unknown model {kind!r}; choose one of {MODELS}")


# ----------------------------------------------------------------------------- cross-validation

def crossval(data: Prepared, folds="loso", model: str = "resnet-mlp", seed: int = 0, inner_folds="auto",
             model_config: ModelConfig = DEFAULT_MODEL_CONFIG, train_config: TrainConfig = TrainConfig(),
             progress: bool = True, n_boot: int = 1000, layouts="auto", ensemble: int = 1,
             mirror="auto", linear_path: str = DEFAULT_LINEAR_PATH, min_recall: float | None = None,
             workers: int | None = 1, threads: int | None = None, fold_store=None,
             extra: "Prepared | list[Prepared] | None" = None, extra_centre: str = "none",
             train_on: str = "task", identity_dims=0, train_measurements: "list[Prepared] | None" = None,
             measurement_weight: str = "row", c_grid=None) -> dict:
    """Cross-validate by person; returns a JSON-ready dict of metrics, per-fold and per-person results.

    ``layouts``: the feature layouts the inner folds may choose between (:data:`LAYOUTS`; ``"auto"``:
    both when the protocol's features are ``xyz``); ``ensemble``: ResNet MLPs averaged per fold;
    ``mirror``: whether training faces are also used mirrored, ``"auto"`` (the inner folds choose,
    :data:`MIRRORS`), ``"on"`` or ``"off"``; ``linear_path``: how the MLP's linear path is made
    (:data:`LINEAR_PATHS`); ``min_recall`` (two classes): each fold's threshold is the highest cut whose
    pooled out-of-fold anxious recall on its inner folds is at least that, instead of the one maximising
    balanced accuracy; the result then also holds what the balanced-accuracy thresholds give
    (``balanced_threshold``), from the same models.  ``workers``: processes that train the outer folds
    side by side (``None``: one per core; see :func:`fold_workers`); each trains with ``threads`` torch
    threads (default: this process's divided among the workers).  A fold gets the same data and seed
    whichever process runs it and in whichever order: with one thread per worker the numbers equal those
    of ``workers=1`` under ``OMP_NUM_THREADS=1``.  ``fold_store``: a folder (:class:`ResultStore`) that keeps
    each outer fold as it finishes, so that a run stopped by Ctrl-C, a crash or a full disk goes on from
    its finished folds when started again: a kept fold is reused only where its data, settings, code
    and threads are this run's (otherwise it is trained again), and ``resumed_folds`` names the reused ones.
    ``extra``: photos of *other* people (another data set, prepared by :func:`prepare` under the same protocol),
    added to the training side of every outer and inner fold and never validated or tested on: every choice is
    still made, and every number measured, on ``data``'s people alone (``extra_train`` in the result counts them);
    a list of data sets is pooled.  ``extra_centre``: ``"none"`` pools them as they are; ``"neutral"`` first
    moves each extra set, on every training side, so that its neutral photos' mean face is that of the training
    side's own neutral photos (the data's held-out people are never moved or looked at).
    ``train_on="emotions"`` (``anxious-vs-rest``): the model trains on every emotion present as a class of its own
    and is scored, selected and thresholded as anxious against the rest, on P(anxious) (:data:`TRAIN_ON`).
    ``identity_dims``: every face first loses that many directions along which the training side's people differ
    (``"auto"``: the inner folds choose among :data:`IDENTITY_DIMS`; :class:`SelectedLogReg`), learned from each
    training side's own people and their emotions, never from a held-out person (TRAINING_DETAIL section 7 item 16).
    ``train_measurements``: the same photos measured again (e.g. re-framed, :class:`facekit.extract.ExtractSettings`),
    each prepared by :func:`prepare` from the same index: every training side of every outer and inner fold also
    trains on these measurements of its own people's photos (inner folds validate on them too, by person as
    always); held-out photos are scored on ``data``'s measurement alone (TRAINING_DETAIL section 7 item 23).
    ``measurement_weight`` (:data:`MEASUREMENT_WEIGHTS`): ``"row"``, every measurement weighs as much as a photo in
    logistic regression's loss; ``"photo"``, a photo's K + 1 measurements together weigh one photo.
    ``c_grid``: the Cs logistic regression's inner folds choose among (its own, or the ResNet MLP's fitted linear
    path's); default :attr:`SelectedLogReg.GRID` (TRAINING_DETAIL section 7 item 24)."""
    from tqdm.auto import tqdm

    t0 = time.time()
    X, y, g = data.X, data.y, data.groups
    n_classes = len(data.classes)
    binary = n_classes == 2
    if min_recall is not None and (not binary or model == "majority"):
        raise ValueError("--min-recall sets the threshold of a two-class model (binary or anxious-vs-rest, "
                         f"resnet-mlp or logreg); this run has {n_classes} classes and model {model!r}")
    check_learnable(data)
    if extra_centre not in EXTRA_CENTRES:
        raise ValueError(f"extra_centre must be one of {EXTRA_CENTRES}, got {extra_centre!r}")
    extras = [extra] if isinstance(extra, Prepared) else list(extra or [])
    if extra_centre != "none" and not extras:
        raise ValueError(f"--extra-centre {extra_centre} places extra training data (--extra-train), and none is given")
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    y_fit, fit_classes, positive = _training_classes(data, train_on, model, extras or None)
    identity_grid = _identity_grid(identity_dims)
    if any(identity_grid) and extras:
        raise ValueError(IDENTITY_WITH_EXTRA)
    if any(identity_grid) and model == "majority":
        raise ValueError("--identity-dims changes the faces a model learns from; the majority baseline learns from "
                         "none: use it with --model resnet-mlp or logreg")
    extra_info, added = None, None
    if extras:
        extra_info = {**_check_extra(data, concat_prepared(extras)), "centre": extra_centre}
        added = _extra_rows(data, extras, extra_centre)
    if measurement_weight not in MEASUREMENT_WEIGHTS:
        raise ValueError(f"measurement_weight must be one of {MEASUREMENT_WEIGHTS}, got {measurement_weight!r}")
    more = _measurement_rows(data, list(train_measurements or []))
    splits = person_folds(g, folds, seed=seed)
    for tr, te in splits:
        assert not set(g[tr]) & set(g[te]), "a person on both sides of a fold"
    if model != "majority":
        _check_training_parts(data, splits, folds)
    prob = np.full((len(y), n_classes), np.nan)
    pred = np.full(len(y), -1)
    pred_balanced = np.full(len(y), -1)  # with min_recall: what each fold's balanced-accuracy threshold gives
    other_thr_balanced = np.full(len(data.X_other), np.nan)
    fold_of = np.full(len(y), -1)
    thr_of = np.full(len(y), np.nan)  # each row's fold's threshold (two classes)
    other_p = np.full(len(data.X_other), np.nan)
    other_thr = np.full(len(data.X_other), np.nan)
    other_fold = np.full(len(data.X_other), -1)
    fold_rows = [None] * len(splits)
    params = dict(seed=seed, inner_folds=inner_folds, model_config=model_config, train_config=train_config,
                  layouts=layouts, ensemble=ensemble, mirror=mirror, linear_path=linear_path, min_recall=min_recall)
    if positive is not None:  # only then, so that the folds kept by earlier runs keep their keys
        params["positive"] = positive
    if identity_grid != (0,):  # likewise
        params["identity_dims"] = identity_dims
    if more is not None:  # likewise
        params.update(measurements=1 + len(train_measurements), measurement_weight=measurement_weight)
    if c_grid is not None and c_grid_tuple(c_grid) != SelectedLogReg.GRID:  # likewise
        params["c_grid"] = c_grid_tuple(c_grid)
    n_workers, threads = fold_workers(workers, len(splits), threads) if model != "majority" else (1, None)
    store = ResultStore(fold_store) if fold_store is not None and model != "majority" else None
    resumed = []
    with tqdm(total=len(splits), desc=f"{model} folds", unit="fold", disable=not progress) as bar:
        for out in _run_folds(data, splits, model, params, n_workers, threads, store, progress, added, y_fit, more):
            if out.get("resumed"):
                resumed.append(out["fold"])
            k, te = out["fold"], splits[out["fold"]][1]
            prob[te] = out["prob"]
            thr = out["threshold"]
            pred[te] = ev.predict_with_threshold(prob[te], thr)
            if min_recall is not None:
                pred_balanced[te] = ev.predict_with_threshold(prob[te], out["selected"]["threshold_balanced"])
            fold_of[te] = k
            if thr is not None:
                thr_of[te] = thr
            rows = out["other_rows"]
            if rows is not None and rows.any():
                other_fold[rows] = k
                other_p[rows] = out["other_p"] if binary else np.nan
                other_thr[rows] = thr if thr is not None else 0.5
                if min_recall is not None:
                    other_thr_balanced[rows] = out["selected"]["threshold_balanced"]
            fold_rows[k] = {"fold": k, "test_people": out["test_people"], "n_train": int(len(splits[k][0])),
                            "n_test": int(len(te)), **out["selected"]}
            if more is not None:  # the training side's rows: its photos' measurements, all of them
                fold_rows[k]["n_train_rows"] = int(len(splits[k][0]) + np.isin(more[1], splits[k][0]).sum())
            bar.update()
    report = ev.classification_report(y, prob, data.classes, None)
    # with per-fold thresholds the hard predictions are the folds' own
    report_pred = _report_from_pred(y, pred, prob, data.classes)
    report.update(report_pred)
    result = {
        "task": data.protocol.task, "classes": list(data.classes), "model": model,
        "protocol": {**data.protocol.to_dict(), "folds": str(folds), "inner_folds": inner_folds,
                     "layouts": list(_layouts(layouts, X.shape[1])) if model != "majority" else None,
                     "ensemble": ensemble if model == "resnet-mlp" else None,
                     "mirror": [bool(m) for m in _mirrors(mirror, mirrorable(X))] if model != "majority" else None,
                     "model_config": (_reported_configs(model_config, _layouts(layouts, X.shape[1]), X.shape[1],
                                                        len(fit_classes)) if model == "resnet-mlp" else None),
                     "linear_path": (linear_path if model == "resnet-mlp"
                                     and any(c.has_linear_path for c in _model_configs(model_config)) else None),
                     "selection": "feature layout, mirroring, epochs/C and threshold chosen on inner person "
                                  "folds of each training part",
                     "threshold_rule": ("balanced accuracy" if min_recall is None else
                                        f"highest cut with inner out-of-fold anxious recall >= {min_recall:g}"),
                     "min_recall": min_recall, "extra_train": bool(extras),
                     "extra_centre": extra_centre if extras else None,
                     "train_on": train_on if model != "majority" else None,  # the baseline trains on nothing
                     "identity_dims": (None if model == "majority" else
                                       "auto" if len(identity_grid) > 1 else identity_grid[0]),
                     "identity_dims_grid": list(identity_grid) if len(identity_grid) > 1 else None,
                     "training_classes": list(fit_classes),
                     "train_measurements": (1 + len(train_measurements or []) if model != "majority" else None),
                     "measurement_weight": (measurement_weight if train_measurements and model != "majority"
                                            else None),
                     "c_grid": (list(params.get("c_grid", SelectedLogReg.GRID)) if model != "majority" else None)},
        "seed": seed, **data.counts,
        "accuracy": report["accuracy"], "balanced_accuracy": report["balanced_accuracy"],
        "recall": report["recall"], "precision": report["precision"], "f1": report["f1"],
        "support": report["support"], "confusion": report["confusion"], "auc": report["auc"],
        "average_precision": report.get("average_precision"),
    }
    if binary:
        lo, hi = ev.bootstrap_ci(y, pred, g, lambda a, b: ev.skm.balanced_accuracy_score(a, b), n_boot, seed)
        result["balanced_accuracy_ci95"] = [lo, hi]
    if len(data.X_other) and binary:
        done = np.isfinite(other_p)
        flagged = other_p[done] >= other_thr[done]
        result["false_alarm_other"] = float(flagged.mean()) if done.any() else None
        result["false_alarm_by_emotion"] = {
            EMOTIONS.get(e, e): float(flagged[data.emotion_other[done] == e].mean())
            for e in np.unique(data.emotion_other[done])}
        result["n_other_scored"] = int(done.sum())
    if data.protocol.task == "anxious-vs-rest":  # the rest includes other emotions: how often are they "anxious"?
        result.update(_rest_false_alarms(pred, data.emotion))
    if min_recall is not None:  # the same models at the thresholds the default rule would have chosen
        bal = _report_from_pred(y, pred_balanced, prob, data.classes)
        alt = {"balanced_accuracy": bal["balanced_accuracy"], "accuracy": bal["accuracy"], "recall": bal["recall"],
               "balanced_accuracy_ci95": list(ev.bootstrap_ci(y, pred_balanced, g, lambda a, b:
                                                              ev.skm.balanced_accuracy_score(a, b), n_boot, seed))}
        if data.protocol.task == "anxious-vs-rest":
            alt.update(_rest_false_alarms(pred_balanced, data.emotion))
        elif len(data.X_other):
            done = np.isfinite(other_p)
            alt["false_alarm_other"] = float((other_p[done] >= other_thr_balanced[done]).mean()) if done.any() else None
        result["balanced_threshold"] = alt
        # A cut placed for recall R on a handful of anxious validation photos is mostly noise (CK+ with one inner
        # draw: ~5 fear photos, held-out recall 0.60 for R = 0.8): say which folds' cuts rest on so few.
        result["min_recall_thin_folds"] = [f["fold"] for f in fold_rows
                                           if f.get("threshold_n_anxious", 0) < MIN_PER_CLASS_FOR_THRESHOLD]
    per = ev.per_person(y, pred, g)
    per["fold"] = [int(fold_of[g == p][0]) for p in per.index]
    result["per_person"] = per.reset_index().to_dict(orient="records")
    result["folds_detail"] = fold_rows
    result["predictions"] = predictions_table(
        data, prob, pred, fold_of, thr_of, other_p, other_thr, other_fold,
        *((pred_balanced, other_thr_balanced) if min_recall is not None else ())).to_dict(orient="records")
    result["n_folds"] = len(splits)
    if extra_info is not None:
        result["extra_train"] = extra_info
    if more is not None:
        result["n_train_measurement_rows"] = int(len(more[1]))  # the further measurements' rows, over all photos
    result["resumed_folds"] = sorted(resumed)  # kept from an earlier, interrupted run (fold_store)
    result["runtime_s"] = round(time.time() - t0, 1)  # this run's: without the resumed folds' training
    result["machine"] = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                         "workers": n_workers, "torch_threads_per_fold": threads}
    return result


def predictions_table(data: Prepared, prob: np.ndarray, pred: np.ndarray, fold: np.ndarray, threshold: np.ndarray,
                      other_p: np.ndarray, other_threshold: np.ndarray, other_fold: np.ndarray,
                      pred_balanced: np.ndarray | None = None,
                      other_threshold_balanced: np.ndarray | None = None) -> pd.DataFrame:
    """One row per scored photo, each scored by the model of the fold that held its person out: ``row`` (its
    position in the extract table, -1 where unknown), ``person``, ``emotion`` (English name), ``label`` (its class
    in the task; empty for a binary task's other emotions, which are scored but not in the task), ``fold``,
    ``p_<class>`` per class, ``threshold`` (the fold's cut on P(anxious); empty for 7class), ``predicted`` and
    ``correct`` (empty where there is no label); with ``--min-recall`` also ``predicted_balanced``, what the fold's
    balanced-accuracy threshold gives.  The rows crossval's metrics are computed from, for ROC curves, operating
    points and a look at the photos it got wrong."""
    classes = list(data.classes)
    names = np.array([EMOTIONS.get(e, e) for e in data.emotion], dtype=object)
    task = pd.DataFrame({
        "row": data.rows if data.rows is not None else np.full(len(data.y), -1),
        "person": data.groups, "emotion": names, "label": np.asarray(classes, dtype=object)[data.y],
        "fold": fold, **{f"p_{c}": prob[:, i] for i, c in enumerate(classes)}, "threshold": threshold,
        "predicted": np.asarray(classes, dtype=object)[pred], "correct": pred == data.y})
    if pred_balanced is not None:
        task["predicted_balanced"] = np.asarray(classes, dtype=object)[pred_balanced]
    scored = np.isfinite(other_p)
    if not scored.any():
        return task
    p_other = other_p[scored]
    flagged = p_other >= other_threshold[scored]
    other = pd.DataFrame({
        "row": data.rows_other[scored] if data.rows_other is not None else np.full(int(scored.sum()), -1),
        "person": data.groups_other[scored],
        "emotion": [EMOTIONS.get(e, e) for e in data.emotion_other[scored]], "label": None,
        "fold": other_fold[scored], f"p_{classes[0]}": 1.0 - p_other, f"p_{classes[1]}": p_other,
        "threshold": other_threshold[scored], "predicted": np.where(flagged, classes[1], classes[0]), "correct": None})
    if pred_balanced is not None:
        other["predicted_balanced"] = np.where(p_other >= other_threshold_balanced[scored], classes[1], classes[0])
    return pd.concat([task, other], ignore_index=True)


def with_photo_columns(predictions: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """:func:`predictions_table` with each photo's ``container`` and ``member`` (its ZIP or folder and its path
    inside) in front of the other columns, from the extract table's rows, in place of ``row``."""
    known = predictions["row"].to_numpy() >= 0
    where = table.iloc[predictions.loc[known, "row"].to_numpy()]
    front = pd.DataFrame({c: pd.Series([None] * len(predictions), dtype=object) for c in ("container", "member")})
    for c in ("container", "member"):
        front.loc[known, c] = where[c].astype(str).to_numpy()
    return pd.concat([front, predictions.drop(columns="row").reset_index(drop=True)], axis=1)


def read_predictions(path) -> pd.DataFrame:
    """A ``crossval`` run's ``FILE.predictions.csv`` (:func:`predictions_table`, with each photo's ``container`` and
    ``member``) as written: only empty cells are missing, so a person named ``NA`` (as in JAFFE) or ``null`` stays
    a name, as pandas' default reading would not keep it; ``fold`` is an integer and ``correct`` a boolean where
    there is a label."""
    table = pd.read_csv(path, keep_default_na=False, na_values=[""], encoding="utf-8-sig",
                        dtype={c: str for c in ("container", "member", "person", "emotion", "label", "predicted",
                                                "predicted_balanced")})
    table["correct"] = table["correct"].map({"True": True, "False": False, True: True, False: False}).astype("boolean")
    return table


def draws_ensemble(tables: list[pd.DataFrame]) -> tuple[pd.DataFrame, dict]:
    """Several runs of one two-class cross-validation on differently measured landmarks (``crossval --reframe-draws``'s
    draws; their :func:`read_predictions` tables) as one ensemble → (its per-photo table, its figures).

    A photo is decided by its margin averaged over the draws, each draw's p(anxious) minus the threshold of the fold
    that held its person out: anxious where the mean is above 0.  Each draw's models never saw the photo's person,
    so neither does the ensemble.  Only photos scored in every draw are in it (``n_left_out`` counts the others).
    The figures are those of a single run's JSON: ``balanced_accuracy``, ``accuracy``, ``recall`` per class, ``auc``
    (of the mean p(anxious), pooled as a run pools its folds), ``false_alarm_other`` (other expressions called
    anxious) and ``n_images``."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    keyed = []
    for t in tables:
        if not {"p_anxious", "threshold"} <= set(t.columns):
            raise ValueError("an ensemble of the draws needs a two-class task with an anxious class (binary or "
                             f"anxious-vs-rest); these runs have columns {', '.join(t.columns)}")
        n = t.groupby(["container", "member"], dropna=False, sort=False).cumcount()  # a photo scored twice stays two
        keyed.append(t.assign(occurrence=n.to_numpy()).set_index(["container", "member", "occurrence"]))
    common = keyed[0].index
    for t in keyed[1:]:
        common = common[common.isin(t.index)]
    every = set().union(*(set(t.index) for t in keyed))
    margin = np.mean([(t.loc[common, "p_anxious"] - t.loc[common, "threshold"]).to_numpy(float) for t in keyed], axis=0)
    p_anxious = np.mean([t.loc[common, "p_anxious"].to_numpy(float) for t in keyed], axis=0)
    table = keyed[0].loc[common, ["person", "emotion", "label"]].reset_index()
    labels = sorted(set(table["label"].dropna()) - {"anxious"})
    if len(labels) != 1:
        raise ValueError(f"an ensemble of the draws needs two classes, anxious and one other; these runs have "
                         f"{sorted(set(table['label'].dropna()))}")
    other = labels[0]
    table["p_anxious_mean"], table["margin_mean"] = p_anxious, margin
    table["predicted"] = np.where(margin > 0, "anxious", other)
    table["correct"] = pd.Series(table["predicted"] == table["label"], dtype="boolean").where(table["label"].notna())
    scored = table["label"].notna().to_numpy()
    y, pred = (table["label"][scored] == "anxious").to_numpy(), (margin[scored] > 0)
    rest = ~table["emotion"].isin(["neutral", "anxious"]).to_numpy()
    figures = {"n_draws": len(tables), "n_images": int(scored.sum()), "n_left_out": len(every) - len(common),
               "rule": "each photo's p(anxious) minus its fold's threshold, averaged over the draws: anxious above 0",
               "balanced_accuracy": float(balanced_accuracy_score(y, pred)), "accuracy": float(accuracy_score(y, pred)),
               "recall": {other: float((~pred[~y]).mean()) if (~y).any() else None,
                          "anxious": float(pred[y].mean()) if y.any() else None},
               "auc": float(roc_auc_score(y, p_anxious[scored])) if 0 < y.sum() < len(y) else None,
               "false_alarm_other": float((margin[rest] > 0).mean()) if rest.any() else None}
    return table, figures


def fold_workers(workers: int | None, n_folds: int, threads: int | None = None) -> tuple[int, int | None]:
    """(processes, torch threads in each) for training ``n_folds`` outer folds: ``workers`` processes
    (``None``: one per core), never more than the folds; with more than one, each process trains with
    ``threads`` threads, by default this process's torch threads (``OMP_NUM_THREADS``; else one per core)
    divided among them (at least 1), so that they do not fight over the cores.  One process trains in
    this one, with its threads as they are (``None``) unless ``threads`` is given."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = cores if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"--workers {workers}: give 1 or more processes (or leave it out: one per core)")
    n = max(1, min(n, n_folds))
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads={threads}: give 1 or more torch threads per fold")
    # this process's threads (OMP_NUM_THREADS, torch.set_num_threads, else the cores) shared among the workers
    return n, (int(threads) if threads is not None else max(1, min(torch.get_num_threads(), cores) // n)
               if n > 1 else None)


def _fit_fold(k: int, X_tr, y_tr, g_tr, X_te, X_other, n_classes: int, model: str, params: dict,
              extra: tuple | None = None, strata=None) -> dict:
    """Train one outer fold's model (its inner folds choose everything) and score its held-out rows:
    the unit of work of :func:`crossval`, run in this process or a worker.  ``extra``: the rows of
    :func:`_extra_rows` (``(X, y)``, and what centring needs) trained on with every training side, never
    validated or tested on.  ``strata``: the training rows' emotions (for ``params["identity_dims"]``)."""
    clf = make_model(model, n_classes, **params)
    clf = clf.fit(X_tr, y_tr, g_tr, extra) if strata is None else clf.fit(X_tr, y_tr, g_tr, extra, strata)
    binary = n_classes == 2 or params.get("positive") is not None  # scored as two classes either way
    return {"fold": k, "prob": clf.predict_proba(X_te), "threshold": clf.threshold_ if binary else None,
            "other_p": clf.predict_proba(X_other)[:, -1] if binary and len(X_other) else None,
            "selected": dict(clf.selected_)}


def _run_folds(data: Prepared, splits, model: str, params: dict, n_workers: int, threads: int | None,
               store: "ResultStore | None" = None, progress: bool = False, extra: tuple | None = None,
               y_fit: np.ndarray | None = None, more: tuple | None = None):
    """Yield each outer fold's :func:`_fit_fold` result with ``test_people`` and ``other_rows`` (the rows of
    ``data.X_other`` it scored), through :func:`run_kept` (with a ``store``: the folds it keeps first).
    ``extra``: :func:`_extra_rows`; with centring, each fold's job also says which of its training rows are neutral.
    ``y_fit``: the classes the models train on, where they are not ``data.y``'s (``crossval(train_on=…)``).
    ``more``: :func:`_measurement_rows`, the training photos' further measurements, added to each training side."""
    X, g = data.X, data.groups
    y = data.y if y_fit is None else y_fit
    n_classes = len(data.classes) if y_fit is None else int(y_fit.max()) + 1
    people = [sorted(set(g[te])) for _, te in splits]
    rows = [np.isin(data.groups_other, p) if len(data.X_other) else None for p in people]

    def side(tr):  # a training side: its photos as measured, then (``more``) their further measurements
        if more is None:
            return X[tr], tr
        mine = np.isin(more[1], tr)
        return np.concatenate([X[tr], more[0][mine]]), np.concatenate([tr, more[1][mine]])

    def added(tr):
        return extra if extra is None or len(extra) == 2 else (*extra, data.emotion[tr] == NEUTRAL)

    # the training rows' emotions, where the identity directions need them (only then: the kept folds' keys stay)
    strata = (lambda tr: (data.emotion[tr],)) if params.get("identity_dims") is not None else (lambda tr: ())
    jobs = []
    for k, (tr, te) in enumerate(splits):
        X_tr, src = side(tr)
        jobs.append((k, X_tr, y[src], g[src], X[te], data.X_other[rows[k]] if rows[k] is not None
                     else data.X_other[:0], n_classes, model, params, added(src), *strata(src)))
    for out in run_kept(_fit_fold, jobs, n_workers, threads, store, progress):
        yield {**out, "test_people": people[out["fold"]], "other_rows": rows[out["fold"]]}


def run_kept(fn, jobs: list[tuple], n_workers: int, threads: int | None, store: "ResultStore | None" = None,
             progress: bool = False, key_parts=None):
    """:func:`run_jobs` (``fn`` returns a dict), and with a ``store`` first the results it keeps from an earlier
    run of the same work (marked ``resumed``), then the others, each kept there as it finishes.  A job's key
    (:func:`job_key`) hashes ``key_parts(job)`` (default: the job itself) and the torch threads it runs with."""
    if store is None:
        yield from run_jobs(fn, jobs, n_workers, threads)
        return
    import torch

    # the threads are part of the key: with more than one per job the last digits may differ
    keys = [job_key((key_parts or tuple)(job), threads if threads is not None else torch.get_num_threads())
            for job in jobs]
    found = [store.load(i, key) for i, key in enumerate(keys)]
    todo = [(fn, i, *job) for i, (job, out) in enumerate(zip(jobs, found)) if not isinstance(out, dict)]
    stale = sum(out is ResultStore.STALE for out in found)
    if progress and (len(todo) < len(jobs) or stale):
        from tqdm.auto import tqdm

        tqdm.write(f"{store.folder}: reusing {len(jobs) - len(todo)} of {len(jobs)} {store.what} finished by an "
                   "earlier run of the same work" + (f"; {stale} kept from other data, settings or code are "
                                                     "run again" if stale else ""), file=sys.stderr)
    yield from (out for out in found if isinstance(out, dict))
    for i, out in run_jobs(_indexed, todo, n_workers, threads):  # each as it finishes
        store.save(i, keys[i], out)
        yield out


def _indexed(fn, i: int, *job):
    return i, fn(*job)


def job_key(parts: tuple, threads: int) -> str:
    """What decides a job's result, hashed: its arrays, tables and settings, the threads it runs with, and
    facekit's code and the versions of what it computes with."""
    h = hashlib.sha256(_code_fingerprint().encode())
    _hash_parts(h, (*parts, threads))
    return h.hexdigest()


def _hash_parts(h, parts) -> None:
    for part in parts:
        if isinstance(part, tuple):  # e.g. crossval's extra training rows: each array in full, not its repr
            h.update(b"(")
            _hash_parts(h, part)
        elif isinstance(part, pd.DataFrame):
            h.update(repr((list(part.columns), part.dtypes.astype(str).tolist())).encode())
            h.update(pd.util.hash_pandas_object(part, index=True).to_numpy().tobytes())
        elif isinstance(part, np.ndarray):
            h.update(repr((part.dtype.str, part.shape)).encode())
            h.update("\0".join(map(str, part.ravel())).encode() if part.dtype == object else part.tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\1")


def _code_fingerprint() -> str:
    import sklearn
    import torch

    h = hashlib.sha256(repr((ResultStore.VERSION, platform.python_version(), np.__version__, torch.__version__,
                             sklearn.__version__)).encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def spread(values) -> dict:
    """``n``, ``mean``, ``sd`` (n − 1 in the denominator; ``None`` for one value), ``min`` and ``max`` of ``values``
    (``None`` values left out): how far a figure moves over repeated draws."""
    v = np.array([x for x in values if x is not None], dtype=float)
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else None,
            "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "min": float(v.min()) if v.size else None, "max": float(v.max()) if v.size else None}


class ResultStore:
    """A folder of finished units of work (:func:`crossval`'s outer folds, :func:`facekit.experiment.compare`'s
    variants), one ``{prefix}NNN.npz`` each (a result's arrays as arrays, the rest as JSON text; read with
    ``allow_pickle=False``), written whole or not at all (a temporary file, then renamed), so that a run
    stopped by Ctrl-C, a crash or a full disk goes on from them.  A result is found only under the key of the
    work that made it (:func:`job_key`)."""

    VERSION = 1
    STALE = object()  # load(): a result is there, made by other work

    def __init__(self, folder, prefix: str = "fold", what: str = "folds"):
        self.folder, self.prefix, self.what = Path(folder).expanduser(), prefix, what
        self._warned = False

    def _file(self, i: int):
        return self.folder / f"{self.prefix}{i:03d}.npz"

    def load(self, i: int, key: str):
        """Result ``i`` if it was made under ``key`` (marked ``resumed``); :data:`STALE` if by other work; else
        ``None`` (none kept, or one that cannot be read, with a warning naming it: it is made again)."""
        path = self._file(i)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("key") != key:
                    return self.STALE
                return {**meta["result"], **{name: z[name] for name in meta["arrays"]}, "resumed": True}
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"{path}: a result kept by an earlier run cannot be read ({exc}); it is made again",
                          stacklevel=2)
            return None

    def save(self, i: int, key: str, out: dict) -> None:
        """Keep result ``i``; where it cannot be written, warn once and go on (the run itself loses nothing)."""
        arrays = {k: v for k, v in out.items() if isinstance(v, np.ndarray)}
        meta = json.dumps({"key": key, "arrays": list(arrays),
                           "result": {k: v for k, v in out.items() if k not in arrays}}, default=float)
        tmp = self.folder / f".{self.prefix}{i:03d}.{os.getpid()}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=np.array(meta), **arrays)
            os.replace(tmp, self._file(i))
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not self._warned:
                warnings.warn(f"cannot keep finished {self.what} in {self.folder} ({exc}): this run goes on, but "
                              f"if it is stopped its {self.what} are made again", stacklevel=2)
                self._warned = True

    def clear(self) -> None:
        """Remove the folder (the run's result is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def run_jobs(fn, jobs: list[tuple], n_workers: int, threads: int | None):
    """Yield ``fn(*job)`` for each job, with ``threads`` torch threads (``None``: as they are): in this process
    and in order when ``n_workers`` is 1, else in joblib's process pool (loky) as they finish.  A worker that
    fails, or Ctrl-C, stops the pool with the run.  (:func:`fold_workers` gives ``n_workers`` and ``threads``.)"""
    if n_workers == 1:
        for job in jobs:
            yield _with_threads(fn, threads, *job)
        return
    from joblib import Parallel, delayed

    yield from Parallel(n_jobs=n_workers, backend="loky", return_as="generator_unordered")(
        delayed(_in_worker)(fn, threads, *job) for job in jobs)


def _with_threads(fn, threads: int | None, *args):
    with torch_threads(threads):
        return fn(*args)


def _in_worker(fn, threads: int | None, *args):
    """:func:`_with_threads` in a pool worker.  tqdm's first bar, even a disabled one, makes a process-shared
    lock: a named semaphore that a worker stopped by Ctrl-C leaves behind, for Python to warn about at exit.
    A worker's bars are all disabled, so a thread lock does."""
    import threading

    from tqdm import tqdm

    if "_lock" not in vars(tqdm):
        tqdm.set_lock(threading.RLock())
    return _with_threads(fn, threads, *args)


def _rest_false_alarms(pred: np.ndarray, emotion: np.ndarray) -> dict:
    """For anxious-vs-rest: the share of each non-anxious emotion predicted anxious (neutral apart)."""
    other = ~np.isin(emotion, ["중립", "불안"])
    out = {"false_alarm_other": float((pred[other] == 1).mean()) if other.any() else None,
           "false_alarm_by_emotion": {EMOTIONS.get(e, e): float((pred[emotion == e] == 1).mean())
                                      for e in np.unique(emotion) if e != "불안"},
           "n_other_scored": int(other.sum())}
    if (emotion == "중립").any():
        out["false_alarm_neutral"] = float((pred[emotion == "중립"] == 1).mean())
    return out


def _report_from_pred(y, pred, prob, classes) -> dict:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {"accuracy": float(accuracy_score(y, pred)), "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "precision": dict(zip(classes, map(float, p))), "recall": dict(zip(classes, map(float, r))),
            "f1": dict(zip(classes, map(float, f))), "support": dict(zip(classes, map(int, s))),
            "confusion": confusion_matrix(y, pred, labels=labels).tolist()}
