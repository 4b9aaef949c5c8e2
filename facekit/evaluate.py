"""Stage 7, **evaluate**: metrics on people absent from training and model selection.

Plain functions on arrays, checked against scikit-learn in the tests: accuracy,
balanced accuracy, per-class precision/recall/F1, ROC and PR AUC, the threshold
chosen on validation people, bootstrap confidence intervals that resample
*people* (photos of one person are not independent), per-person accuracy, and
the false-alarm rate of an anxiety detector on other expressions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm


def predict_with_threshold(prob: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Class per row: for two classes, class 1 when its probability ≥ ``threshold``; else the argmax."""
    prob = np.asarray(prob)
    if prob.shape[1] == 2 and threshold is not None:
        return (prob[:, 1] >= threshold).astype(np.int64)
    return prob.argmax(1)


def choose_threshold(y: np.ndarray, p_pos: np.ndarray) -> float:
    """The threshold on the positive-class probability that maximises balanced accuracy on
    validation rows (ties: the one closest to 0.5).  Returns 0.5 when one class is missing."""
    y = np.asarray(y)
    p_pos = np.asarray(p_pos, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return 0.5
    candidates = np.unique(np.concatenate([p_pos, [0.5]]))
    best, best_score = 0.5, -1.0
    for t in candidates:
        pred = (p_pos >= t).astype(int)
        score = skm.balanced_accuracy_score(y, pred)
        if score > best_score + 1e-12 or (abs(score - best_score) <= 1e-12 and abs(t - 0.5) < abs(best - 0.5)):
            best, best_score = float(t), score
    return best


def threshold_for_recall(y: np.ndarray, p_pos: np.ndarray, min_recall: float) -> float:
    """The highest threshold on the positive-class probability at which the positive recall on these rows
    is at least ``min_recall`` (predictions are ``p_pos >= threshold``): the operating point that keeps
    that recall with as few false positives as these rows allow.  0.5 when there is no positive row."""
    if not 0 < min_recall <= 1:
        raise ValueError(f"min_recall must be in (0, 1], got {min_recall}")
    pos = np.sort(np.asarray(p_pos, dtype=np.float64)[np.asarray(y) == 1])[::-1]
    if not len(pos):
        return 0.5
    k = int(np.ceil(min_recall * len(pos) - 1e-9))  # positives that must reach the cut
    return float(pos[max(k, 1) - 1])


def classification_report(y: np.ndarray, prob: np.ndarray, classes: tuple[str, ...],
                          threshold: float | None = None) -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/support, confusion matrix and AUCs."""
    y = np.asarray(y)
    prob = np.asarray(prob)
    pred = predict_with_threshold(prob, threshold)
    labels = list(range(len(classes)))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out = {
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)) if len(y) else float("nan"),
        "precision": {c: float(v) for c, v in zip(classes, p)},
        "recall": {c: float(v) for c, v in zip(classes, r)},
        "f1": {c: float(v) for c, v in zip(classes, f)},
        "support": {c: int(v) for c, v in zip(classes, s)},
        "confusion": skm.confusion_matrix(y, pred, labels=labels).tolist(),
        "threshold": None if threshold is None else float(threshold),
    }
    present = np.unique(y)
    if len(classes) == 2:
        ok = len(present) == 2
        out["auc"] = float(skm.roc_auc_score(y, prob[:, 1])) if ok else float("nan")
        out["average_precision"] = float(skm.average_precision_score(y, prob[:, 1])) if ok else float("nan")
    else:
        try:
            cols = [c for c in labels if c in present]
            pr = prob[:, cols] / prob[:, cols].sum(1, keepdims=True)
            if len(cols) == 2:  # scikit-learn's one-vs-rest wants three classes; with two it is the binary AUC
                out["auc"] = float(skm.roc_auc_score(y == cols[1], pr[:, 1]))
            else:
                out["auc"] = float(skm.roc_auc_score(y, pr, multi_class="ovr", average="macro", labels=cols))
        except ValueError:
            out["auc"] = float("nan")
    return out


def per_person(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Photos, correct predictions and accuracy for each person."""
    df = pd.DataFrame({"person": np.asarray(groups), "correct": np.asarray(y) == np.asarray(pred)})
    out = df.groupby("person").agg(photos=("correct", "size"), correct=("correct", "sum"))
    out["accuracy"] = out["correct"] / out["photos"]
    return out.sort_values("accuracy")


def bootstrap_ci(y, prob, groups, metric, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """(low, high) percentile interval of ``metric(y, prob)`` resampling *people* with replacement."""
    y, prob, groups = np.asarray(y), np.asarray(prob), np.asarray(groups)
    people = np.unique(groups)
    rows = {p: np.flatnonzero(groups == p) for p in people}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        pick = np.concatenate([rows[p] for p in rng.choice(people, len(people), replace=True)])
        if len(np.unique(y[pick])) < 2:
            continue
        try:
            values.append(metric(y[pick], prob[pick]))
        except ValueError:
            continue
    if not values:
        return float("nan"), float("nan")
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def false_alarm_rate(p_anxious: np.ndarray, threshold: float) -> float:
    """Share of photos of *other* expressions that a detector calls anxious."""
    p_anxious = np.asarray(p_anxious)
    return float((p_anxious >= threshold).mean()) if len(p_anxious) else float("nan")


def operating_points(predictions: pd.DataFrame, max_false_alarm: float = 0.25, min_recall: float = 0.8) -> dict:
    """Where a cross-validation's fear scores could be cut, from its per-photo table
    (:func:`facekit.crossval.read_predictions`): a diagnostic of the *ranking*, never a result.

    "False alarms" are the photos of emotions other than fear and neutral called anxious (the
    anxious-vs-rest target's rate; for a binary task, its other emotions' photos). Returns the run's own point
    (``recall``, ``false_alarm``: each fold at its own cut, chosen on its training people) and, over one cut
    of the pooled probabilities, chosen *with the test people's labels*: ``best_recall`` at false alarms
    ≤ ``max_false_alarm`` (with that cut's ``false_alarm`` and ``neutral`` rate), and the ``false_alarm``
    needed for a recall of ``min_recall``. No threshold rule can beat these bounds with the same scores;
    ``within_person_auc`` (fear against each person's other photos, averaged over people) against the pooled
    ``auc`` shows how much of the loss is between people.  The ensemble table of ``crossval --reframe-draws``
    (``p_anxious_mean`` instead of ``p_anxious``) is read the same way, on the draws' mean p(anxious)."""
    t = predictions
    fear = t["emotion"].eq("anxious").to_numpy()
    neutral = t["emotion"].eq("neutral").to_numpy()
    other = ~fear & ~neutral
    p = t["p_anxious" if "p_anxious" in t else "p_anxious_mean"].to_numpy(dtype=float)
    called = t["predicted"].eq("anxious").to_numpy()
    if not fear.any() or not other.any():
        raise ValueError("operating points need fear photos and photos of other emotions (not neutral)")
    scored = t["label"].notna().to_numpy()  # the task's rows: the AUCs are fear against the rest of them
    cuts = np.unique(p[fear | other])  # every cut that changes a count, as the share at or above each
    recall = 1 - np.searchsorted(np.sort(p[fear]), cuts, side="left") / fear.sum()
    false_alarm = 1 - np.searchsorted(np.sort(p[other]), cuts, side="left") / other.sum()
    ok = false_alarm <= max_false_alarm
    # the best recall within the false alarms allowed, at the highest cut that gives it (its fewest false alarms)
    best = int(np.flatnonzero(ok & (recall == recall[ok].max()))[-1]) if ok.any() else None
    reach = np.flatnonzero(recall >= min_recall)
    need = int(reach[-1]) if len(reach) else None  # the highest cut that still reaches the recall
    per_person = []
    for person in np.unique(t["person"][scored]):
        mine = scored & t["person"].eq(person).to_numpy()
        if fear[mine].any() and not fear[mine].all():
            per_person.append(skm.roc_auc_score(fear[mine], p[mine]))
    return {
        "recall": float(called[fear].mean()), "false_alarm": float(called[other].mean()),
        "max_false_alarm": max_false_alarm,
        "best_recall": float(recall[best]) if best is not None else 0.0,
        "best_false_alarm": float(false_alarm[best]) if best is not None else None,
        "best_neutral": float((p[neutral] >= cuts[best]).mean()) if best is not None and neutral.any() else None,
        "min_recall": min_recall, "false_alarm_for_min_recall": float(false_alarm[need]) if need is not None else None,
        "auc": float(skm.roc_auc_score(fear[scored], p[scored])),
        "within_person_auc": float(np.mean(per_person)) if per_person else None,
        "within_person_auc_min": float(np.min(per_person)) if per_person else None,
    }
