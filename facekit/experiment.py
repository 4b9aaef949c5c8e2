"""Train on one person split and evaluate on its test people: what notebooks 03 and 04 run.

Roles per photo come from :func:`roles_for`: the official AI Hub split done right
where the data has Training and Validation folders (the synthetic demo data has
them too), else a random split by person.  ``train`` people fit the model,
``val`` people choose everything (epoch, threshold, C), ``test`` people are
used once, for the reported numbers.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from . import evaluate as ev
from .checkpoint import normalization_meta
from .crossval import Prepared, Protocol, check_learnable, prepare
from .labels import EMOTIONS
from .model import ModelConfig
from .selection import _threshold
from .split import official_split, person_split
from .train import TrainConfig, fit, predict_proba


def roles_for(table: pd.DataFrame, seed: int = 0) -> tuple[np.ndarray, dict]:
    """``train``/``val``/``test`` (or ``excluded``) per table row, and a summary of the split."""
    splits = set(table["split"].dropna())
    if {"Training", "Validation"} <= splits:
        return official_split(table, seed=seed)
    usable = table["person"].notna().to_numpy().copy()  # pandas 3 hands out read-only arrays
    if "problem" in table:
        usable &= table["problem"].isna().to_numpy()
    role = np.full(len(table), "excluded", dtype=object)
    role[usable] = person_split(table.loc[usable, "person"].astype(str).to_numpy(), val_fraction=0.15,
                                test_fraction=0.2, seed=seed)
    info = {"protocol": "random split by person: 65% train, 15% val, 20% test people"}
    for r in ("train", "val", "test"):
        info[f"{r}_people"] = int(table.loc[role == r, "person"].nunique())
        info[f"{r}_photos"] = int((role == r).sum())
    return role, info


@dataclass
class Fitted:
    """A model trained on the ``train`` people with everything chosen on the ``val`` people."""

    kind: str
    predict: object  # X → probabilities
    threshold: float | None
    history: list = field(default_factory=list)
    model: object = None
    val_report: dict = field(default_factory=dict)
    selected: dict = field(default_factory=dict)


def _logreg_on_split(data: Prepared, tr: np.ndarray, va: np.ndarray):
    """Logistic regression on the train people with C chosen on the val people → (C, the fitted model)."""
    from .selection import SelectedLogReg

    best = None
    for C in SelectedLogReg.GRID:
        m = SelectedLogReg(len(data.classes))._make(C).fit(data.X[tr], data.y[tr])
        lr = SelectedLogReg(len(data.classes))
        lr.model_, lr.columns_ = m, slice(None)  # the protocol's own feature layout on a single split
        score = ev.classification_report(data.y[va], lr.predict_proba(data.X[va]), data.classes)["balanced_accuracy"]
        if best is None or score > best[0]:
            best = (score, C, lr)
    return best[1], best[2]


def fit_on_split(data: Prepared, role: np.ndarray, kind: str = "resnet-mlp",
                 model_config: ModelConfig = ModelConfig(), train_config: TrainConfig = TrainConfig(),
                 callback=None, progress: bool = False, linear_path: str = "trained") -> Fitted:
    """Train ``kind`` (resnet-mlp, logreg or majority) on train people; choose on val people.

    ``linear_path="fitted"`` (resnet-mlp): the model gets the linear path (``linear_skip``),
    fitted as the logistic regression whose C the val people choose (the ``logreg``
    baseline's), then frozen; the deep part learns the rest and the val people choose its
    epoch, 0 (the linear model alone) included (``TrainConfig.linear_C``).
    """
    check_learnable(data)
    r = role[data.rows]
    tr, va = r == "train", r == "val"
    X, y = data.X, data.y
    n_classes = len(data.classes)
    binary = n_classes == 2
    if linear_path not in ("trained", "fitted"):
        raise ValueError(f"linear_path must be 'trained' or 'fitted', got {linear_path!r}")
    if kind == "resnet-mlp":
        mc = replace(model_config, n_features=X.shape[1], n_classes=n_classes)
        extra = {}
        if linear_path == "fitted":
            C, _ = _logreg_on_split(data, tr, va)
            mc, train_config = replace(mc, linear_skip=True), replace(train_config, linear_C=C)
            extra = {"linear_path": "fitted", "linear_C": C}
        model, history = fit(X[tr], y[tr], X[va], y[va], mc, train_config, callback=callback, progress=progress)
        predict = lambda x: predict_proba(model, x)  # noqa: E731
        selected = {"epoch": history[-1].get("best_epoch", len(history)) if history else 0, **extra}
    elif kind == "logreg":
        C, model = _logreg_on_split(data, tr, va)
        history, selected = [], {"C": C}
        predict = model.predict_proba
    elif kind == "majority":
        from .selection import Majority

        model = Majority(n_classes).fit(X[tr], y[tr], None)
        predict, history, selected = model.predict_proba, [], {"class": data.classes[model.class_]}
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    p_val = predict(X[va])
    threshold = _threshold(y[va], p_val[:, 1]) if binary and kind != "majority" else (0.5 if binary else None)
    val_report = ev.classification_report(y[va], p_val, data.classes, threshold) if va.any() else {}
    return Fitted(kind, predict, threshold, history, model, val_report, {**selected, "threshold": threshold})


def evaluate_on_split(data: Prepared, role: np.ndarray, fitted: Fitted, n_boot: int = 1000, seed: int = 0) -> dict:
    """Test-people metrics, bootstrap intervals by person, per-person accuracy, false alarms on other emotions."""
    te = role[data.rows] == "test"
    X, y, g = data.X[te], data.y[te], data.groups[te]
    prob = fitted.predict(X)
    report = ev.classification_report(y, prob, data.classes, fitted.threshold)
    pred = ev.predict_with_threshold(prob, fitted.threshold)
    report["balanced_accuracy_ci95"] = list(ev.bootstrap_ci(
        y, pred, g, lambda a, b: ev.skm.balanced_accuracy_score(a, b), n_boot, seed))
    report["accuracy_ci95"] = list(ev.bootstrap_ci(y, pred, g, lambda a, b: float((a == b).mean()), n_boot, seed))
    if len(data.classes) == 2 and len(np.unique(y)) == 2:
        report["auc_ci95"] = list(ev.bootstrap_ci(y, prob[:, 1], g, ev.skm.roc_auc_score, n_boot, seed))
    report["n_test_people"] = int(len(np.unique(g)))
    report["per_person"] = ev.per_person(y, pred, g).reset_index().to_dict(orient="records")
    report["prob"], report["y"], report["pred"], report["groups"] = prob, y, pred, g
    if data.protocol.task == "anxious-vs-rest":
        from .crossval import _rest_false_alarms

        report.update(_rest_false_alarms(pred, data.emotion[te]))
    other = role[data.rows_other] == "test"
    p_other = np.full(int(other.sum()), np.nan)  # P(anxious) of the test people's other emotions (two classes)
    if len(data.classes) == 2 and other.any():
        p_other = fitted.predict(data.X_other[other])[:, 1]
        flagged = p_other >= (fitted.threshold if fitted.threshold is not None else 0.5)
        emo = data.emotion_other[other]
        report["false_alarm_other"] = float(flagged.mean())
        report["false_alarm_by_emotion"] = {EMOTIONS.get(e, e): float(flagged[emo == e].mean()) for e in np.unique(emo)}
        report["n_other_test"] = int(other.sum())
    report["predictions"] = _split_predictions(data.subset(te, other), prob, pred, p_other, fitted.threshold)
    return report


def _split_predictions(test: Prepared, prob, pred, p_other, threshold) -> pd.DataFrame:
    """Each test photo's row of :func:`facekit.crossval.predictions_table` (``row`` its position in the extract
    table; no ``fold``: one model scored them all), the other emotions' photos included where they were scored."""
    from .crossval import predictions_table

    n, n_other = len(test.y), len(test.X_other)
    cut = threshold if threshold is not None else 0.5
    table = predictions_table(test, prob, pred, np.zeros(n, int), np.full(n, cut if len(test.classes) == 2 else np.nan),
                              p_other, np.full(n_other, cut), np.zeros(n_other, int))
    return table.drop(columns="fold")


def public(report: dict) -> dict:
    """The JSON-ready part of a report (arrays and the per-photo table dropped)."""
    return {k: v for k, v in report.items() if k not in ("prob", "y", "pred", "groups", "predictions")}


def compare(table: pd.DataFrame, landmarks: np.ndarray, role: np.ndarray, variants: dict,
            n_boot: int = 200, progress: bool = True, workers: int | None = 1,
            threads: int | None = None, store=None) -> pd.DataFrame:
    """Train and test each variant on the same split.

    ``variants``: name → dict(protocol=Protocol, kind=..., model_config=..., train_config=...,
    linear_path=...).
    Returns one row per variant with test accuracy, balanced accuracy (95% CI by person),
    AUC, anxious recall, false alarms on other emotions, and the test photos and people it was measured on
    (fewer under the personal-neutral protocol, which scores no one with fewer than two neutral photos).
    ``workers``: processes that train the variants side by side (``None``: one per core), each with
    ``threads`` torch threads (default: this process's divided among them), as :func:`facekit.crossval.crossval`
    trains its folds: a variant gets the same data and seed wherever it runs, so with one thread
    each the table is the one-process table under one thread.  ``store``: a folder that keeps each
    variant's row as it finishes (:class:`facekit.jobs.ResultStore`), so that the same call after an
    interrupted one trains only the variants it lacks; a kept row is reused only where its variant, data,
    split, code and threads are this call's.  Remove the folder when the table is safe elsewhere.
    """
    from tqdm.auto import tqdm

    from .jobs import ResultStore, fold_workers, run_kept

    names = list(variants)
    n_workers, threads = fold_workers(workers, len(names), threads)
    jobs = [(name, variants[name], table, landmarks, role, n_boot) for name in names]
    if store is not None:
        store = ResultStore(store, prefix="variant", what="variants")
    rows = {}
    # "from_cache" says which photos this run extracted, not what they are: it is left out of the key
    for row in tqdm(run_kept(_compare_one, jobs, n_workers, threads, store, progress,
                             key_parts=lambda job: (*job[:2], job[2].drop(columns="from_cache", errors="ignore"),
                                                    *job[3:])),
                    total=len(names), desc="variants", disable=not progress):
        row.pop("resumed", None)
        rows[row["variant"]] = row
    return pd.DataFrame([rows[name] for name in names]).set_index("variant")


def _compare_one(name: str, v: dict, table: pd.DataFrame, landmarks: np.ndarray, role: np.ndarray,
                 n_boot: int) -> dict:
    """One row of :func:`compare`: prepare, train on the train people, test on the test people."""
    data = prepare(table, landmarks, v.get("protocol", Protocol()))
    fitted = fit_on_split(data, role, v.get("kind", "resnet-mlp"), v.get("model_config", ModelConfig()),
                          v.get("train_config", TrainConfig()), linear_path=v.get("linear_path", "trained"))
    rep = evaluate_on_split(data, role, fitted, n_boot=n_boot)
    ci = rep["balanced_accuracy_ci95"]
    return {"variant": name, "accuracy": rep["accuracy"], "balanced_accuracy": rep["balanced_accuracy"],
            "bal_acc_ci95": f"{ci[0]:.2f}–{ci[1]:.2f}", "auc": rep.get("auc"),
            "anxious_recall": rep["recall"].get("anxious"),
            "false_alarm_other": rep.get("false_alarm_other"), "test_photos": rep["n"],
            "test_people": rep["n_test_people"], "selected": fitted.selected}


def checkpoint_meta(data: Prepared, table: pd.DataFrame, role: np.ndarray, split_info: dict,
                    fitted: Fitted, train_config: TrainConfig, source: str) -> dict:
    """Everything a checkpoint must carry to be used and understood later."""
    tr = role[data.rows] == "train"
    seen = {r: people_digests(table.loc[role == r, "person"]) for r in ("train", "val")}
    return {
        "task": data.protocol.task, "classes": list(data.classes),
        "normalization": normalization_meta(data.protocol.normalization), "features": data.protocol.features,
        "calibration": data.protocol.calibration, "threshold": fitted.threshold,
        "training_data": {"source": source, "label_policy": data.protocol.policy, "split": split_info,
                          "train_photos": int(tr.sum()), "train_people": int(len(np.unique(data.groups[tr]))),
                          "per_class_train": {c: int((data.y[tr] == i).sum()) for i, c in enumerate(data.classes)},
                          "people_seen": seen},
        "train_config": train_config.to_dict(),
        "metrics": {"validation": {k: v for k, v in fitted.val_report.items() if k != "confusion"},
                    "selected": fitted.selected},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def people_digests(persons) -> list[str]:
    """Sorted short digests (12 hex digits of SHA-1) of the distinct person ids: what a checkpoint keeps of the
    people it was trained and validated on, enough to recognise them and no more."""
    return sorted({hashlib.sha1(str(p).encode()).hexdigest()[:12] for p in pd.Series(persons).dropna()})


def check_unseen(meta: dict, table: pd.DataFrame, role: np.ndarray, what: str = "the checkpoint") -> None:
    """A ``ValueError`` where any of this split's test people trained or validated the checkpoint (``meta``, as
    :func:`checkpoint_meta` wrote it): its test numbers would not be of people it never saw.  That happens when
    notebooks 03 and 04 ran on other data, sample or seed.  A checkpoint that does not say whom it saw (one
    written before 2026-12-07) gets a warning, since it cannot be checked."""
    seen = (meta.get("training_data") or {}).get("people_seen")
    if not seen:
        warnings.warn(f"{what} does not say which people it was trained on, so nobody can check that this split's "
                      "test people are new to it; retrain it with notebook 03 to make the check", stacklevel=2)
        return
    test = people_digests(table.loc[role == "test", "person"])
    for r, name in (("train", "trained"), ("val", "validated")):
        shared = set(test) & set(seen.get(r, []))
        if shared:
            raise ValueError(f"{len(shared)} of the {len(test)} test people of this split {name} {what}, so its "
                             "test numbers would not be of unseen people: notebooks 03 and 04 ran on other data, "
                             "sample or seed (DATA, PER_ZIP, SEED, FACEKIT_SMOKE). Run notebook 03 again with "
                             "this notebook's parameters, or give the parameters it ran with here")
