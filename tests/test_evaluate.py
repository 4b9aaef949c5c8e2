"""Metrics against scikit-learn on fixed inputs, the validation threshold, bootstrap by person."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from facekit import evaluate as ev

Y2 = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0])
P2 = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.7, 0.45, 0.9, 0.6, 0.55, 0.3, 0.05])
PROB2 = np.stack([1 - P2, P2], axis=1)


@pytest.mark.parametrize("threshold", [None, 0.42, 0.7])
def test_binary_report_matches_sklearn(threshold):
    rep = ev.classification_report(Y2, PROB2, ("neutral", "anxious"), threshold)
    pred = (P2 >= (0.5 if threshold is None else threshold)).astype(int)
    assert rep["n"] == 12 and rep["threshold"] == threshold
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(Y2, pred))
    assert rep["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(Y2, pred))
    p, r, f, s = skm.precision_recall_fscore_support(Y2, pred, labels=[0, 1], zero_division=0)
    for i, name in enumerate(("neutral", "anxious")):
        assert rep["precision"][name] == pytest.approx(p[i])
        assert rep["recall"][name] == pytest.approx(r[i])
        assert rep["f1"][name] == pytest.approx(f[i])
        assert rep["support"][name] == s[i]
    assert rep["confusion"] == skm.confusion_matrix(Y2, pred).tolist()
    assert rep["auc"] == pytest.approx(skm.roc_auc_score(Y2, P2))
    assert rep["average_precision"] == pytest.approx(skm.average_precision_score(Y2, P2))


def test_thresholds_change_predictions_not_aucs():
    low = ev.classification_report(Y2, PROB2, ("neutral", "anxious"), 0.3)
    high = ev.classification_report(Y2, PROB2, ("neutral", "anxious"), 0.85)
    assert low["recall"]["anxious"] == 1.0 and high["recall"]["anxious"] == 0.2
    assert low["auc"] == high["auc"]


def test_three_class_report_matches_sklearn():
    rng = np.random.default_rng(4)
    y = np.array([0, 1, 2] * 8 + [0, 2])
    prob = rng.dirichlet([1, 1, 1], size=len(y))
    prob[np.arange(len(y)), y] += rng.uniform(0, 0.8, len(y))  # better than chance, not perfect
    prob /= prob.sum(1, keepdims=True)
    classes = ("neutral", "anxious", "happy")
    rep = ev.classification_report(y, prob, classes)
    pred = prob.argmax(1)
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert rep["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    assert [rep["precision"][c] for c in classes] == pytest.approx(list(p))
    assert [rep["recall"][c] for c in classes] == pytest.approx(list(r))
    assert [rep["f1"][c] for c in classes] == pytest.approx(list(f))
    assert [rep["support"][c] for c in classes] == list(s)
    assert rep["confusion"] == skm.confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    assert rep["auc"] == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    assert 0.5 < rep["auc"] < 1
    # a threshold means nothing with three classes: argmax
    assert ev.classification_report(y, prob, classes, 0.9)["accuracy"] == rep["accuracy"]


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_multiclass_report_with_two_classes_present_has_their_auc():
    """A 7-class model tested on people with only two of the emotions: the AUC of those two, as one-vs-rest
    averaged over them would give (each the same binary AUC), not NaN."""
    rng = np.random.default_rng(5)
    y = np.array([0, 2] * 10)
    prob = rng.dirichlet([1, 1, 1], size=len(y))
    prob[np.arange(len(y)), y] += rng.uniform(0, 0.6, len(y))
    prob /= prob.sum(1, keepdims=True)
    rep = ev.classification_report(y, prob, ("neutral", "anxious", "happy"))
    two = prob[:, [0, 2]] / prob[:, [0, 2]].sum(1, keepdims=True)
    assert rep["auc"] == pytest.approx(skm.roc_auc_score(y == 2, two[:, 1]))
    assert rep["auc"] == pytest.approx(np.mean([skm.roc_auc_score(y == c, two[:, i]) for i, c in enumerate((0, 2))]))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_binary_report_with_one_class_present_has_no_auc():
    rep = ev.classification_report(np.zeros(4, int), PROB2[:4], ("neutral", "anxious"))
    assert math.isnan(rep["auc"]) and math.isnan(rep["average_precision"])
    assert rep["recall"]["anxious"] == 0.0 and rep["support"]["anxious"] == 0


def test_predict_with_threshold():
    np.testing.assert_array_equal(ev.predict_with_threshold(PROB2, 0.45), (P2 >= 0.45).astype(int))
    np.testing.assert_array_equal(ev.predict_with_threshold(PROB2), PROB2.argmax(1))


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(2, 30))
def test_choose_threshold_maximises_balanced_accuracy(data, n):
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    p = np.array(data.draw(st.lists(st.sampled_from(np.round(np.linspace(0, 1, 21), 2).tolist()),
                                    min_size=n, max_size=n)))
    t = ev.choose_threshold(y, p)
    if len(np.unique(y)) < 2:
        assert t == 0.5
        return

    def score(th):  # balanced accuracy, by hand (sklearn's is checked above; this is faster)
        pred = p >= th
        return (pred[y == 1].mean() + (~pred[y == 0]).mean()) / 2

    grid = np.concatenate([np.linspace(-0.0125, 1.0125, 83), p, [0.5]])
    best = max(score(th) for th in grid)
    assert score(t) == pytest.approx(best)
    # ties: the candidate closest to 0.5
    tied = [c for c in np.unique(np.concatenate([p, [0.5]])) if score(c) == pytest.approx(best)]
    assert abs(t - 0.5) <= min(abs(c - 0.5) for c in tied) + 1e-12


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(1, 30), min_recall=st.sampled_from([0.1, 0.5, 0.8, 0.95, 1.0]))
def test_threshold_for_recall_is_the_highest_cut_keeping_the_recall(data, n, min_recall):
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    p = np.array(data.draw(st.lists(st.sampled_from(np.round(np.linspace(0, 1, 21), 2).tolist()),
                                    min_size=n, max_size=n)))
    t = ev.threshold_for_recall(y, p, min_recall)
    if not (y == 1).any():
        assert t == 0.5
        return
    recall = (p[y == 1] >= t).mean()
    assert recall >= min_recall - 1e-12
    higher = p[p > t]  # any higher cut loses the recall asked for
    if len(higher):
        assert (p[y == 1] >= higher.min()).mean() < min_recall


def test_threshold_for_recall_on_fixed_input():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.55, 0.65, 0.2, 0.6, 0.7, 0.8, 0.9])
    assert ev.threshold_for_recall(y, p, 0.8) == 0.6  # 4 of 5 anxious photos at 0.6 and above
    assert ev.threshold_for_recall(y, p, 0.81) == 0.2  # 5 of 5 needed
    assert ev.threshold_for_recall(y, p, 0.2) == 0.9
    with pytest.raises(ValueError, match="min_recall"):
        ev.threshold_for_recall(y, p, 0)


def test_choose_threshold_on_fixed_input():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.55, 0.65, 0.6, 0.7, 0.9])
    # 0.7 misses one anxious photo, 0.6 one neutral: equal balanced accuracy (5/6), 0.6 is closer to 0.5;
    # 0.5 itself calls two neutral photos anxious
    assert ev.choose_threshold(y, p) == 0.6
    assert ev.choose_threshold(np.ones(4, int), np.array([0.1, 0.2, 0.3, 0.4])) == 0.5


def _accuracy(a, b):
    return float((a == b).mean())


def _photo_bootstrap(y, pred, metric, n_boot, seed=0):
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(y), len(y))
        if len(np.unique(y[pick])) == 2:
            vals.append(metric(y[pick], pred[pick]))
    return np.quantile(vals, 0.025), np.quantile(vals, 0.975)


def test_bootstrap_resamples_people_not_photos():
    """Every person is right on exactly half of their photos: resampling people can only give 0.5,
    resampling photos gives a spread."""
    groups = np.repeat([f"p{i}" for i in range(8)], 4)
    y = np.tile([0, 0, 1, 1], 8)
    pred = np.tile([0, 1, 1, 0], 8)
    for metric in (_accuracy, skm.balanced_accuracy_score):
        lo, hi = ev.bootstrap_ci(y, pred, groups, metric, n_boot=300, seed=0)
        assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    plo, phi = _photo_bootstrap(y, pred, _accuracy, 300)
    assert phi - plo > 0.2


def test_bootstrap_with_one_person_holding_most_photos():
    """One person (50 photos, all right) and nine with 2 photos each, all wrong: the pooled accuracy is
    50/68, but a third of person resamples hold no photo of the big person."""
    groups = np.array(["big"] * 50 + [f"p{i}" for i in range(9) for _ in range(2)])
    y = np.array([0, 1] * 34)
    pred = np.where(groups == "big", y, 1 - y)
    point = _accuracy(y, pred)
    assert point == pytest.approx(50 / 68)
    lo, hi = ev.bootstrap_ci(y, pred, groups, _accuracy, n_boot=400, seed=3)
    plo, phi = _photo_bootstrap(y, pred, _accuracy, 400)
    assert lo <= point <= hi and plo <= point <= phi
    assert lo < 0.1 < 0.5 < plo  # photos alone would claim far more certainty
    assert (hi - lo) > 2 * (phi - plo)
    assert ev.bootstrap_ci(y, pred, groups, _accuracy, n_boot=400, seed=3) == (lo, hi)


def test_bootstrap_auc_by_person_deterministic():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i}" for i in range(15)], 6)
    y = np.tile([0, 1], 45)
    p = np.clip(0.5 * y + rng.uniform(0, 0.6, len(y)), 0, 1)
    point = skm.roc_auc_score(y, p)
    a = ev.bootstrap_ci(y, p, groups, skm.roc_auc_score, n_boot=200, seed=1)
    assert a == ev.bootstrap_ci(y, p, groups, skm.roc_auc_score, n_boot=200, seed=1)
    assert a[0] < point < a[1] <= 1
    assert a != ev.bootstrap_ci(y, p, groups, skm.roc_auc_score, n_boot=200, seed=2)


def test_bootstrap_without_both_classes_is_nan():
    lo, hi = ev.bootstrap_ci(np.zeros(6, int), np.zeros(6, int), np.arange(6), _accuracy, n_boot=20)
    assert math.isnan(lo) and math.isnan(hi)


def test_false_alarm_rate():
    assert ev.false_alarm_rate(np.array([0.1, 0.6, 0.5, 0.9]), 0.5) == 0.75
    assert ev.false_alarm_rate(np.array([0.1, 0.6, 0.5, 0.9]), 0.95) == 0.0
    assert math.isnan(ev.false_alarm_rate(np.array([]), 0.5))


def test_per_person():
    y = np.array([0, 1, 1, 0, 1, 0])
    pred = np.array([0, 1, 0, 1, 1, 0])
    groups = np.array(["a", "a", "a", "b", "c", "c"])
    table = ev.per_person(y, pred, groups)
    assert list(table.index) == ["b", "a", "c"]  # worst first
    assert table.loc["a", "photos"] == 3 and table.loc["a", "correct"] == 2
    assert table.loc["a", "accuracy"] == pytest.approx(2 / 3)
    assert table.loc["b", "accuracy"] == 0.0 and table.loc["c", "accuracy"] == 1.0


def test_roc_figure_marks_the_operating_point_of_a_threshold_or_of_hard_predictions():
    """``show_roc_pr`` marks (false positive rate, recall) of one cut, or of predictions made at several cuts (a
    cross-validation's folds): the point is computed from the predictions given, not from a single threshold."""
    import matplotlib

    matplotlib.use("Agg")
    from facekit.plots import show_roc_pr

    one = show_roc_pr(Y2, P2, threshold=0.5)  # 3 of 5 positives, 2 of 7 negatives at ≥ 0.5
    np.testing.assert_allclose(one.axes[0].collections[0].get_offsets()[0], [2 / 7, 3 / 5])
    folds = np.where(np.arange(len(P2)) < 6, P2 >= 0.5, P2 >= 0.3)  # two folds, two cuts
    two = show_roc_pr(Y2, P2, predicted=folds)
    fp, tp = (folds & (Y2 == 0)).sum(), (folds & (Y2 == 1)).sum()
    np.testing.assert_allclose(two.axes[0].collections[0].get_offsets()[0], [fp / 7, tp / 5])
    assert "each fold's threshold" in two.axes[0].get_legend().get_texts()[-1].get_text()


def test_operating_points_read_the_ranking_from_a_predictions_table():
    """Two people; fear is ranked first within each, but person B's scores sit lower than person A's: the pooled
    single cut must trade recall for false alarms where each person's own ranking would not."""
    import pandas as pd

    rows = []
    for person, shift in (("A", 0.4), ("B", 0.0)):
        for emotion, p in (("anxious", 0.5), ("anxious", 0.45), ("happy", 0.3), ("sad", 0.2), ("neutral", 0.1),
                           ("angry", 0.05)):
            rows.append({"person": person, "emotion": emotion, "label": "anxious" if emotion == "anxious" else "rest",
                         "p_anxious": p + shift, "predicted": "anxious" if p + shift >= 0.5 else "rest"})
    t = pd.DataFrame(rows)
    o = ev.operating_points(t, max_false_alarm=0.25, min_recall=1.0)
    # own calls (cut 0.5): A's two fear photos and B's first (0.5); of the other emotions A's happy (0.7) and sad (0.6)
    assert o["recall"] == 0.75 and o["false_alarm"] == 2 / 6
    # pooled: others A 0.7, 0.6, 0.45; B 0.3, 0.2, 0.05. fear A 0.9, 0.85; B 0.5, 0.45.
    # at false alarms ≤ 0.25 (one of six others): cut 0.7 → fear 2 of 4, false alarms 1/6; cut 0.5 → 3 of 4, 2/6;
    # the same 2 of 4 at cut 0.85 with no false alarm: the bound is read at the highest cut that gives it
    assert o["best_recall"] == 0.5 and o["best_false_alarm"] == 0.0 and o["best_neutral"] == 0.0
    # all four fear photos need the cut at 0.45, which calls A's three other emotions anxious
    assert o["false_alarm_for_min_recall"] == 0.5
    assert o["within_person_auc"] == 1.0 and o["within_person_auc_min"] == 1.0
    assert o["auc"] == pytest.approx(skm.roc_auc_score(t["emotion"] == "anxious", t["p_anxious"]))
    assert o["auc"] < 1.0
    # the ensemble table of crossval --reframe-draws: the draws' mean p(anxious), read the same way
    assert ev.operating_points(t.rename(columns={"p_anxious": "p_anxious_mean"}), 0.25, 1.0) == o
    with pytest.raises(ValueError, match="need fear photos"):
        ev.operating_points(t[t["emotion"].isin(["anxious", "neutral"])])
