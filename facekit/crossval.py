"""Cross-validation by person: the protocol (:class:`Protocol`, :func:`prepare`), the outer folds and the report.

Every number here comes from people absent from training *and* from model
selection: each outer fold holds out its people; inside it, the epoch count, the
regularisation strength and the decision threshold are chosen by inner folds over
the training part's people only (:mod:`facekit.selection` holds the models that do it, :mod:`facekit.jobs`
runs the folds in processes and keeps the finished ones).

    prepared = prepare(table, landmarks, Protocol(task="binary"))
    result = crossval(prepared, folds="loso", model="resnet-mlp")
"""
from __future__ import annotations

import platform
import time
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from . import evaluate as ev
from .calibration import CALIBRATIONS, personal_neutral
from .checkpoint import features
from .jobs import ResultStore, fold_workers, run_kept
from .labels import EMOTIONS, apply_policy, encode_task, task_classes
from .measures import MEASURES_NEED_ALIGNMENT, measurable
from .model import ModelConfig
from .normalize import NormalizeSettings, normalize
from .selection import (DEFAULT_LINEAR_PATH, DEFAULT_MODEL_CONFIG, IDENTITY_WITH_EXTRA, MIN_PER_CLASS_FOR_THRESHOLD,
                        SelectedLogReg, _identity_grid, _layouts, _mirrors, _model_configs, _reported_configs,
                        c_grid_tuple, make_model)
from .split import person_folds
from .train import TrainConfig, mirrorable

# --train-on: the classes an anxious-vs-rest model trains on (its own two, or every emotion present)
TRAIN_ON = ("task", "emotions")
# --extra-centre: how each extra training set is placed beside the data's training people before pooling
EXTRA_CENTRES = ("none", "neutral")
# crossval(train_measurements=…, measurement_weight=…): what the further measurements of a photo weigh in logistic
# regression's loss (its own and the ResNet MLP's fitted linear path): "row", each as much as a photo; "photo", all
# of a photo's measurements together as much as one photo (each 1 / (K + 1)), so that C keeps its meaning per photo.
# The MLP's own loss is a mean over its rows either way.  Either way the threshold rule counts photos, not rows
# (TRAINING_DETAIL section 7 item 23).
MEASUREMENT_WEIGHTS = ("row", "photo")
NEUTRAL = "중립"


@dataclass(frozen=True)
class Protocol:
    """What a number means: task, label policy, normalisation, feature layout, calibration."""

    task: str = "binary"
    policy: str = "uploader"
    normalization: NormalizeSettings = field(default_factory=lambda: NormalizeSettings("kit", align=True))
    features: str = "xyz"
    calibration: str = "none"

    def __post_init__(self):
        if self.features == "measures" and not measurable(self.normalization.mode, self.normalization.align):
            raise ValueError(MEASURES_NEED_ALIGNMENT)

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
    run_layouts = _layouts(layouts, X.shape[1]) if model != "majority" else None  # the baseline uses no features
    result = {
        "task": data.protocol.task, "classes": list(data.classes), "model": model,
        "protocol": {**data.protocol.to_dict(), "folds": str(folds), "inner_folds": inner_folds,
                     "layouts": list(run_layouts) if model != "majority" else None,
                     "ensemble": ensemble if model == "resnet-mlp" else None,
                     "mirror": [bool(m) for m in _mirrors(mirror, mirrorable(X))] if model != "majority" else None,
                     "model_config": (_reported_configs(model_config, run_layouts, X.shape[1], len(fit_classes))
                                      if model == "resnet-mlp" else None),
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


def spread(values) -> dict:
    """``n``, ``mean``, ``sd`` (n − 1 in the denominator; ``None`` for one value), ``min`` and ``max`` of ``values``
    (``None`` values left out): how far a figure moves over repeated draws."""
    v = np.array([x for x in values if x is not None], dtype=float)
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else None,
            "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "min": float(v.min()) if v.size else None, "max": float(v.max()) if v.size else None}


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
