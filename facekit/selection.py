"""Model selection inside one outer fold: the models :func:`facekit.crossval.crossval` trains, whose inner
folds over the training part's people choose everything (epochs or C, feature layout, mirroring, linear path,
identity directions, threshold) before the held-out people are scored.

    clf = make_model("resnet-mlp", n_classes=2).fit(X_train, y_train, groups_train)
    p = clf.predict_proba(X_test)
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from . import evaluate as ev
from .calibration import identity_directions, remove_directions
from .measures import N_MEASURES
from .model import ModelConfig
from .split import _draw_people, person_folds
from .train import TrainConfig, _mirror_features, fit, mirrorable, predict_proba

MODELS = ("resnet-mlp", "logreg", "majority")
# --identity-dims auto: how many of the training people's identity directions the inner folds may remove
# (TRAINING_DETAIL section 7 item 16); 0 (the default) removes none
IDENTITY_DIMS = (0, 4, 16)
IDENTITY_WITH_EXTRA = ("--identity-dims learns the identity directions from the data's own training people; it is not "
                       "combined with --extra-train, whose people it would not describe: leave one of them out")
MIN_PER_CLASS_FOR_THRESHOLD = 20


def c_grid_tuple(c_grid) -> tuple[float, ...]:
    """A C grid as a sorted tuple of distinct positive floats, or a clear ``ValueError``."""
    try:
        grid = tuple(sorted({float(c) for c in c_grid}))
    except (TypeError, ValueError):
        raise ValueError(f"a C grid is a list of positive numbers, got {c_grid!r}") from None
    if not grid or grid[0] <= 0 or not all(np.isfinite(grid)):
        raise ValueError(f"a C grid is a list of positive numbers, got {c_grid!r}")
    return grid


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
        Xc, Xe, threshold_extra = _settle(self, X, extra, oof_y, oof_p, strata, groups, dims)
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


def _settle(clf, X: np.ndarray, extra, oof_y, oof_p, strata, groups, dims: int):
    """What both models do once the inner folds have chosen (``clf.layout_`` and the rest): set ``columns_``,
    the threshold from the inner out-of-fold probabilities, ``identity_dims_`` and ``directions_`` (learnt on the
    whole training part) → the training rows ready for the final fit (columns taken, directions removed), the
    extra rows' columns, and the threshold rule's extra figures."""
    clf.columns_ = _columns(clf.layout_, X.shape[1])
    y2, p2 = _one_vs_rest(oof_y, oof_p, clf.positive)
    clf.threshold_, threshold_extra = (_thresholds(y2, p2[:, 1], clf.min_recall, clf.measurements)
                                       if p2.shape[1] == 2 else (None, {}))
    Xc = X[:, clf.columns_]
    clf.identity_dims_ = dims
    clf.directions_ = identity_directions(Xc, strata, groups, _mirror_features)[:, :dims] if dims else None
    Xe = None if extra is None else extra[0][:, clf.columns_]
    return remove_directions(Xc, clf.directions_), Xe, threshold_extra


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
        Xc, Xe, threshold_extra = _settle(self, X, extra, oy, op, strata, groups, self.identity_dims_)
        self.model_ = self._fit(self.C_, *_plus(Xc, y, Xe, extra), self.mirror_)
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
