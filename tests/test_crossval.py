"""Cross-validation by person: prepare, the three tasks, the result's fields, and the command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from facekit import synthetic
from facekit.checkpoint import features
from facekit.crossval import Protocol, crossval, prepare
from facekit.labels import EMOTIONS
from facekit.model import ModelConfig
from facekit.normalize import NormalizeSettings, normalize
from facekit.train import TrainConfig, predict_proba

torch.set_num_threads(1)
threadpool_limits(1)  # BLAS threads fight on a shared machine: logreg is ~20× slower

REQUIRED = ("accuracy", "balanced_accuracy", "recall", "auc", "n_images", "n_people", "n_failed", "per_person",
            "folds_detail")


@pytest.fixture(scope="module")
def dataset():
    """8 synthetic people × (3 neutral, 3 anxious, 1 happy, 1 angry).  The extra emotions are relabelled
    neutral/anxious photos: only the labels matter to the bookkeeping tested here."""
    table, landmarks = synthetic.make_dataset(n_people=8, photos_per_emotion=4, seed=0)
    table.loc[table["photo_id"] == 3, "emotion"] = "기쁨"
    table.loc[table["photo_id"] == 1003, "emotion"] = "분노"
    return table, landmarks


@pytest.fixture(scope="module")
def binary(dataset):
    return prepare(*dataset, Protocol(task="binary"))


def test_prepare_counts_and_failed_photos(dataset):
    table, landmarks = dataset
    table, landmarks = table.copy(), landmarks.copy()
    table.loc[0, "status"] = "no_face"  # a neutral photo of syn-0000 without landmarks
    landmarks[0] = np.nan
    data = prepare(table, landmarks, Protocol(task="binary"))
    assert data.classes == ("neutral", "anxious")
    assert data.counts["n_failed"] == 1 and data.counts["n_rows"] == 64
    assert data.counts["n_images"] == 47 == len(data.y) == len(data.X)
    assert data.counts["per_class"] == {"neutral": 23, "anxious": 24}
    assert data.counts["n_people"] == 8 and data.counts["n_other_emotions"] == 16
    assert set(data.emotion_other) == {"기쁨", "분노"} and len(data.X_other) == 16
    assert 0 not in data.rows and np.isfinite(data.X).all()
    # the rows point back into the table, and X is the normalised landmarks of those rows
    assert (table.loc[data.rows, "person"].to_numpy() == data.groups).all()
    expected = features(normalize(landmarks[data.rows[:3]], NormalizeSettings("kit", align=True)))
    np.testing.assert_allclose(data.X[:3], expected, atol=1e-6)


@pytest.mark.parametrize("task,classes,n_images,per_class", [
    ("binary", ["neutral", "anxious"], 48, {"neutral": 24, "anxious": 24}),
    ("anxious-vs-rest", ["rest", "anxious"], 64, {"rest": 40, "anxious": 24}),
    ("7class", list(EMOTIONS.values()), 64, {"happy": 8, "embarrassed": 0, "angry": 8, "anxious": 24, "hurt": 0,
                                            "sad": 0, "neutral": 24}),
])
def test_tasks_give_their_classes(dataset, task, classes, n_images, per_class):
    data = prepare(*dataset, Protocol(task=task))
    assert list(data.classes) == classes
    assert data.counts["n_images"] == n_images and data.counts["per_class"] == per_class
    result = crossval(data, folds=4, model="majority", progress=False, n_boot=50)
    assert result["classes"] == classes and list(result["recall"]) == classes
    assert result["n_images"] == n_images and result["task"] == task
    _check_predictions(result, data)  # one column of probabilities per class, 7class's cut the argmax
    if task == "binary":
        assert result["n_other_scored"] == 16
    else:  # every labelled photo is in the task: nothing is left out as "other"
        assert data.counts["n_other_emotions"] == 0 and len(data.X_other) == 0
    if task == "anxious-vs-rest":
        # 불안 is the positive class, everything else (neutral included) the rest
        anxious = data.emotion == "불안"
        assert (data.y[anxious] == 1).all() and (data.y[~anxious] == 0).all()
        # false alarms are counted on the rest's non-neutral emotions; the majority (rest) never fires
        assert result["n_other_scored"] == 16 and result["false_alarm_other"] == 0.0
        assert result["false_alarm_neutral"] == 0.0
        assert set(result["false_alarm_by_emotion"]) == {"happy", "angry", "neutral"}
    if task == "7class":
        assert "false_alarm_other" not in result


def _check_result(result, data):
    for key in REQUIRED:
        assert key in result, key
    json.dumps(result)  # JSON-ready as it is
    people = set(data.groups)
    assert result["n_people"] == len(people) and result["n_images"] == len(data.y)
    assert list(result["recall"]) == list(data.classes)
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["balanced_accuracy"] <= 1
    # folds never share a person, and every person is tested in exactly one fold
    seen = []
    for fold in result["folds_detail"]:
        seen += fold["test_people"]
        rows = np.isin(data.groups, fold["test_people"])
        assert fold["n_test"] == rows.sum() and fold["n_train"] == (~rows).sum()
    assert sorted(seen) == sorted(people)
    assert len(result["folds_detail"]) == result["n_folds"]
    fold_of = {p: f["fold"] for f in result["folds_detail"] for p in f["test_people"]}
    per = result["per_person"]
    assert sorted(r["person"] for r in per) == sorted(people)
    for row in per:
        assert row["fold"] == fold_of[row["person"]]
        assert row["photos"] == (data.groups == row["person"]).sum()
    # the pooled accuracy is the per-person table's
    assert sum(r["correct"] for r in per) / sum(r["photos"] for r in per) == pytest.approx(result["accuracy"])
    assert np.sum(result["confusion"]) == len(data.y)
    if len(data.classes) == 2:
        lo, hi = result["balanced_accuracy_ci95"]
        assert lo <= hi
    _check_predictions(result, data)


def _check_predictions(result, data):
    """The per-photo table holds every scored photo once, each from the fold that held its person out, and the
    result's metrics are computed from it."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    import pandas as pd

    table = pd.DataFrame(result["predictions"])
    in_task = table[table["label"].notna()]
    assert len(in_task) == len(data.y) and sorted(in_task["row"]) == sorted(data.rows)
    rest_in_task = result["task"] == "anxious-vs-rest"  # its other emotions are in the task, as "rest"
    assert len(table) - len(in_task) == (0 if rest_in_task else result.get("n_other_scored", 0))
    assert table["row"].is_unique and set(table["person"]) == set(data.groups) | set(data.groups_other)
    fold_of = {p: f["fold"] for f in result["folds_detail"] for p in f["test_people"]}
    assert (table["fold"] == table["person"].map(fold_of)).all()
    assert balanced_accuracy_score(in_task["label"], in_task["predicted"]) == pytest.approx(result["balanced_accuracy"])
    assert in_task["correct"].tolist() == (in_task["label"] == in_task["predicted"]).tolist()
    probs = in_task[[f"p_{c}" for c in data.classes]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    if len(data.classes) == 2:
        if result["model"] != "majority":
            assert roc_auc_score(in_task["label"] == "anxious", in_task["p_anxious"]) == pytest.approx(result["auc"])
        assert ((in_task["p_anxious"] >= in_task["threshold"]) == (in_task["predicted"] == "anxious")).all()
        others = table[table["label"].isna()] if not rest_in_task else in_task[~in_task["emotion"].isin(
            ["neutral", "anxious"])]
        if len(others):
            assert (others["predicted"] == "anxious").mean() == pytest.approx(result["false_alarm_other"])
    else:
        assert in_task["threshold"].isna().all()
        assert (in_task["predicted"] == np.asarray(data.classes)[probs.argmax(1)]).all()


FAST_MLP = dict(model_config=ModelConfig(hidden=32, blocks=1), train_config=TrainConfig(epochs=4, batch_size=32))


@pytest.mark.parametrize("model,kwargs", [
    ("majority", {}),
    ("logreg", {"inner_folds": 2}),
    ("resnet-mlp", {"inner_folds": 1, **FAST_MLP}),
])
def test_crossval_result(binary, model, kwargs):
    result = crossval(binary, folds=4, model=model, progress=False, n_boot=100, **kwargs)
    _check_result(result, binary)
    assert result["model"] == model and result["n_folds"] == 4
    # other emotions of the test people are scored by their fold's model
    assert 0 <= result["false_alarm_other"] <= 1 and result["n_other_scored"] == 16
    assert set(result["false_alarm_by_emotion"]) == {"happy", "angry"}
    if model == "majority":
        # equal classes: the majority is class 0 (neutral), so it never calls anything anxious
        assert result["balanced_accuracy"] == 0.5 and result["recall"] == {"neutral": 1.0, "anxious": 0.0}
        assert result["false_alarm_other"] == 0.0
    if model == "logreg":
        assert all(f["C"] in (0.003, 0.01, 0.03, 0.1, 0.3, 1.0) for f in result["folds_detail"])
        assert result["balanced_accuracy"] > 0.5  # synthetic faces are learnable
    if model == "resnet-mlp":
        assert all(1 <= f["epoch"] <= 4 for f in result["folds_detail"])
    if model != "majority":  # the inner folds chose the feature layout too
        assert result["protocol"]["layouts"] == ["xyz", "xy"]
        assert all(f["layout"] in ("xyz", "xy") for f in result["folds_detail"])


@pytest.mark.parametrize("model,kwargs", [("logreg", {"inner_folds": 2}), ("resnet-mlp", {"inner_folds": 1, **FAST_MLP})])
def test_min_recall_moves_only_the_threshold(binary, model, kwargs):
    """``min_recall`` changes each fold's threshold, not its model: the probabilities (AUC) are those of the
    default run, and the result's ``balanced_threshold`` part reproduces the default run's hard predictions."""
    plain = crossval(binary, folds=4, model=model, progress=False, n_boot=50, **kwargs)
    asked = crossval(binary, folds=4, model=model, progress=False, n_boot=50, min_recall=0.95, **kwargs)
    assert asked["auc"] == plain["auc"]
    assert asked["protocol"]["min_recall"] == 0.95 and plain["protocol"]["min_recall"] is None
    assert "balanced_threshold" not in plain
    alt = asked["balanced_threshold"]
    assert alt["balanced_accuracy"] == plain["balanced_accuracy"] and alt["recall"] == plain["recall"]
    assert alt["false_alarm_other"] == plain["false_alarm_other"]
    for a, b in zip(asked["folds_detail"], plain["folds_detail"]):
        assert a["threshold_balanced"] == b["threshold"] and a["min_recall"] == 0.95
    n_anxious = [f["threshold_n_anxious"] for f in asked["folds_detail"]]
    assert all(n > 0 for n in n_anxious)
    assert asked["min_recall_thin_folds"] == [f["fold"] for f, n in zip(asked["folds_detail"], n_anxious) if n < 20]
    assert "min_recall_thin_folds" not in plain
    assert any(a["threshold"] != b["threshold"] for a, b in zip(asked["folds_detail"], plain["folds_detail"]))


def test_min_recall_needs_a_two_class_model(binary):
    with pytest.raises(ValueError, match="min-recall"):
        crossval(binary, folds=4, model="majority", progress=False, min_recall=0.8)


@pytest.mark.parametrize("model,kwargs", [("logreg", {"inner_folds": 2}), ("resnet-mlp", {"inner_folds": 1, **FAST_MLP})])
def test_layout_choice(binary, model, kwargs):
    """xy models see only x and y, whatever the layout of X; a fixed layout is honoured."""
    from facekit.selection import make_model

    X, y, g = binary.X, binary.y, binary.groups
    only_xy = make_model(model, 2, inner_folds=kwargs["inner_folds"], layouts="xy",
                         **{k: v for k, v in kwargs.items() if k != "inner_folds"}).fit(X, y, g)
    assert only_xy.selected_["layout"] == "xy"
    z_scrambled = X.reshape(len(X), 478, 3).copy()
    z_scrambled[:, :, 2] = np.random.default_rng(0).normal(size=z_scrambled.shape[:2])
    np.testing.assert_allclose(only_xy.predict_proba(z_scrambled.reshape(len(X), -1)), only_xy.predict_proba(X))
    result = crossval(binary, folds=4, model=model, progress=False, n_boot=50, layouts="xyz", **kwargs)
    assert result["protocol"]["layouts"] == ["xyz"] and {f["layout"] for f in result["folds_detail"]} == {"xyz"}


@pytest.mark.parametrize("model,kwargs", [("logreg", {"inner_folds": 2}), ("resnet-mlp", {"inner_folds": 1, **FAST_MLP})])
def test_mirroring_is_chosen_on_inner_folds(binary, model, kwargs, monkeypatch):
    """Both models try training with and without the faces' mirror images and keep what the inner folds
    prefer; a fixed choice is honoured, and mirroring really puts the mirrored faces in the training data."""
    import facekit.selection as sel
    from facekit.selection import make_model
    from facekit.normalize import mirror

    X, y, g = binary.X, binary.y, binary.groups
    auto = make_model(model, 2, layouts="xyz", **kwargs).fit(X, y, g)
    assert auto.selected_["mirror"] in (True, False)
    if model == "resnet-mlp":
        assert set(auto.inner_scores_) == {"xyz/mirror", "xyz/no-mirror"}
        assert auto.selected_["inner_val_bal_acc"] == max(auto.inner_scores_.values())
    seen = []
    real_make = sel.SelectedLogReg._make

    def spy(self, C):
        clf = real_make(self, C)
        fit = clf.fit
        clf.fit = lambda Xf, yf: (seen.append(Xf), fit(Xf, yf))[1]
        return clf

    monkeypatch.setattr(sel.SelectedLogReg, "_make", spy)
    on = make_model("logreg", 2, inner_folds=2, layouts="xyz", mirror="on").fit(X, y, g)
    assert on.selected_["mirror"] is True and len(seen[-1]) == 2 * len(X)
    flipped = mirror(X.reshape(len(X), 478, 3)).reshape(len(X), -1)
    np.testing.assert_allclose(seen[-1][len(X):], flipped, atol=1e-6)
    off = make_model("logreg", 2, inner_folds=2, layouts="xyz", mirror="off").fit(X, y, g)
    assert off.selected_["mirror"] is False and len(seen[-1]) == len(X)
    result = crossval(binary, folds=4, model=model, progress=False, n_boot=50, layouts="xyz", mirror="off", **kwargs)
    assert result["protocol"]["mirror"] == [False] and {f["mirror"] for f in result["folds_detail"]} == {False}
    with pytest.raises(ValueError, match="mirror must be"):
        make_model(model, 2, mirror="sometimes", **kwargs).fit(X, y, g)


def test_crossval_is_deterministic(binary):
    a = crossval(binary, folds=4, model="logreg", inner_folds=2, progress=False, n_boot=50, seed=3)
    b = crossval(binary, folds=4, model="logreg", inner_folds=2, progress=False, n_boot=50, seed=3)
    for key in ("accuracy", "balanced_accuracy", "auc", "per_person", "folds_detail", "false_alarm_other"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("model,kwargs", [("resnet-mlp", dict(FAST_MLP, inner_folds=2)), ("logreg", {})])
def test_folds_in_worker_processes_give_the_same_numbers(binary, model, kwargs):
    """``workers=2``: the outer folds train in two processes (one torch thread each here), finish in any order,
    and give exactly what one process gives."""
    one = crossval(binary, folds=4, model=model, progress=False, n_boot=50, workers=1, **kwargs)
    two = crossval(binary, folds=4, model=model, progress=False, n_boot=50, workers=2, **kwargs)
    assert one["machine"]["workers"] == 1 and one["machine"]["torch_threads_per_fold"] is None
    assert two["machine"]["workers"] == 2 and two["machine"]["torch_threads_per_fold"] == 1
    for r in (one, two):
        r.pop("runtime_s"), r.pop("machine")
    assert json.dumps(one, default=float) == json.dumps(two, default=float)
    assert [f["fold"] for f in two["folds_detail"]] == [0, 1, 2, 3]


def _same_numbers(a: dict, b: dict) -> bool:
    """Two cross-validation results equal in every field but where and when they ran."""
    a, b = ({k: v for k, v in r.items() if k not in ("runtime_s", "machine", "resumed_folds", "created",
                                                     "predictions_file")} for r in (a, b))
    return json.dumps(a, default=float) == json.dumps(b, default=float)


@pytest.mark.parametrize("model,kwargs", [("resnet-mlp", dict(FAST_MLP, inner_folds=2)), ("logreg", {"inner_folds": 2})])
def test_fold_store_keeps_finished_folds_and_goes_on_from_them(binary, model, kwargs, tmp_path, monkeypatch):
    """``fold_store``: each finished fold is kept; a run started again trains only the folds it lacks and gives
    exactly the numbers of an uninterrupted run; folds made by other work, or unreadable, are trained again."""
    import facekit.crossval as cv

    plain = crossval(binary, folds=4, model=model, progress=False, n_boot=50, **kwargs)
    store = tmp_path / "run.json.folds"
    first = crossval(binary, folds=4, model=model, progress=False, n_boot=50, fold_store=store, **kwargs)
    assert _same_numbers(plain, first) and first["resumed_folds"] == []
    assert sorted(f.name for f in store.iterdir()) == [f"fold{k:03d}.npz" for k in range(4)]

    trained = []
    fit_fold = cv._fit_fold
    monkeypatch.setattr(cv, "_fit_fold", lambda k, *a: trained.append(k) or fit_fold(k, *a))
    (store / "fold001.npz").unlink()  # as if stopped before folds 1 and 3 finished
    (store / "fold003.npz").unlink()
    again = crossval(binary, folds=4, model=model, progress=False, n_boot=50, fold_store=store, **kwargs)
    assert sorted(trained) == [1, 3] and again["resumed_folds"] == [0, 2]
    assert _same_numbers(plain, again)
    for name in ("fold001.npz", "fold003.npz"):  # and in two worker processes (one torch thread each, as here)
        (store / name).unlink()
    two = crossval(binary, folds=4, model=model, progress=False, n_boot=50, fold_store=store, workers=2, **kwargs)
    assert two["resumed_folds"] == [0, 2] and _same_numbers(plain, two) and (store / "fold003.npz").exists()

    trained.clear()  # everything kept: nothing is trained
    assert _same_numbers(plain, crossval(binary, folds=4, model=model, progress=False, n_boot=50, fold_store=store,
                                         **kwargs)) and trained == []

    trained.clear()  # another seed is other work: no kept fold is reused, all are replaced
    other = crossval(binary, folds=4, model=model, progress=False, n_boot=50, fold_store=store, seed=5, **kwargs)
    assert sorted(trained) == [0, 1, 2, 3] and other["resumed_folds"] == []
    assert _same_numbers(other, crossval(binary, folds=4, model=model, progress=False, n_boot=50, seed=5, **kwargs))

    trained.clear()  # a damaged file is named and its fold trained again
    (store / "fold002.npz").write_bytes(b"not a fold")
    with pytest.warns(UserWarning, match=r"fold002\.npz: a result kept by an earlier run cannot be read"):
        damaged = crossval(binary, folds=4, model=model, progress=False, n_boot=50, fold_store=store, seed=5, **kwargs)
    assert trained == [2] and _same_numbers(other, damaged)


def test_fold_store_key_holds_what_decides_a_fold(binary, dataset):
    """The key changes with any array, table, setting or the threads, and not otherwise."""
    from facekit.jobs import job_key

    X = binary.X[:10]
    job = (0, X, binary.y[:10], binary.groups[:10], X[:2], X[:0], 2, "resnet-mlp", dict(seed=0, ensemble=1))
    key = job_key(job, 1)
    assert job_key(tuple(job), 1) == key == job_key((0, X.copy(), *job[2:]), 1)
    X2 = X.copy()
    X2[3, 7] = np.nextafter(X2[3, 7], X2.dtype.type(np.inf))  # the smallest change
    assert job_key((0, X2, *job[2:]), 1) != key
    assert job_key((*job[:-1], dict(seed=1, ensemble=1)), 1) != key
    groups = binary.groups[:10].copy()
    groups[0] = "someone else"
    assert job_key((0, X, binary.y[:10], groups, *job[4:]), 1) != key
    assert job_key(job, 2) != key
    extra = (binary.X[10:20], binary.y[10:20])  # crossval's extra training rows: in full, not by their repr
    with_extra = job_key((*job, extra), 1)
    assert with_extra != key and with_extra == job_key((*job, (extra[0].copy(), extra[1])), 1)
    E2 = extra[0].copy()
    E2[5, 700] = np.nextafter(E2[5, 700], E2.dtype.type(np.inf))
    assert job_key((*job, (E2, extra[1])), 1) != with_extra
    table = dataset[0]
    assert job_key((table,), 1) == job_key((table.copy(),), 1)
    changed = table.copy()
    changed.loc[5, "emotion"] = "기쁨" if changed.loc[5, "emotion"] != "기쁨" else "분노"
    assert job_key((changed,), 1) != job_key((table,), 1)


@pytest.fixture(scope="module")
def others():
    """4 synthetic people whose names and faces are not ``dataset``'s: extra training data for it."""
    table, landmarks = synthetic.make_dataset(n_people=4, photos_per_emotion=4, seed=11)
    table = table.assign(person="other-" + table["person"].astype(str))
    return prepare(table, landmarks, Protocol(task="binary"))


def _row_set(X: np.ndarray) -> set:
    return {row.tobytes() for row in np.ascontiguousarray(X)}


@pytest.mark.parametrize("model,kwargs", [("resnet-mlp", dict(FAST_MLP, inner_folds=2)), ("logreg", {"inner_folds": 2})])
def test_extra_training_people_train_every_fold_and_are_never_validated_or_tested(binary, others, model, kwargs,
                                                                                  monkeypatch):
    """``extra``: every training side, inner and outer, holds all the extra photos; no validation side and no
    test fold holds any; every choice and number is still made on the data's own people."""
    import facekit.selection as sel

    cols = {478 * 3: slice(None), 478 * 2: sel._columns("xy", 478 * 3)}  # the layouts' columns
    extra_rows = {n: _row_set(others.X[:, c]) for n, c in cols.items()}
    data_rows = {n: _row_set(binary.X[:, c]) for n, c in cols.items()}
    seen = {"train": 0, "val": 0, "on": False}

    def check(X_train, X_val=None):
        if not seen["on"]:
            return
        n = X_train.shape[1]
        rows = _row_set(X_train)
        assert extra_rows[n] <= rows, "a training side without the extra photos"
        assert rows <= extra_rows[n] | data_rows[n]
        seen["train"] += 1
        if X_val is not None and len(X_val):
            assert not _row_set(X_val) & extra_rows[n], "an extra photo validated on"
            assert _row_set(X_val) <= data_rows[n]
            seen["val"] += 1

    real_fit, real_logreg_fit = sel.fit, sel.SelectedLogReg._fit
    monkeypatch.setattr(sel, "fit", lambda xt, yt, xv, yv, *a, **k: (check(xt, xv), real_fit(xt, yt, xv, yv, *a, **k))[1])
    monkeypatch.setattr(sel.SelectedLogReg, "_fit", lambda self, C, X, y, m: (check(X), real_logreg_fit(self, C, X, y, m))[1])
    plain = crossval(binary, folds=4, model=model, progress=False, n_boot=50, **kwargs)
    seen["on"] = True
    result = crossval(binary, folds=4, model=model, progress=False, n_boot=50, extra=others, **kwargs)
    assert seen["train"] > 4 and (seen["val"] > 0 or model == "logreg")
    _check_result(result, binary)  # tested people, counts and per-person table: the data's alone
    assert not {p for f in result["folds_detail"] for p in f["test_people"]} & set(others.groups)
    assert result["protocol"]["extra_train"] is True and plain["protocol"]["extra_train"] is False
    info = result["extra_train"]
    assert info["n_images"] == len(others.y) == 32 and info["n_people"] == 4 and info["shared_person_names"] == []
    assert "extra_train" not in plain and result["n_images"] == plain["n_images"]
    # the extra photos change the models: the held-out probabilities differ
    assert result["auc"] != plain["auc"] or result["folds_detail"] != plain["folds_detail"]


@pytest.fixture(scope="module")
def far(others):
    """Another 4 people, their faces all moved by one offset (another capture): a second extra set."""
    table, landmarks = synthetic.make_dataset(n_people=4, photos_per_emotion=4, seed=12)
    moved = prepare(table.assign(person="far-" + table["person"].astype(str)), landmarks, Protocol(task="binary"))
    offset = np.linspace(-0.3, 0.3, moved.X.shape[1], dtype=moved.X.dtype)
    return replace(moved, X=moved.X + offset, X_other=moved.X_other + offset)


@pytest.mark.parametrize("model,kwargs", [("resnet-mlp", dict(FAST_MLP, inner_folds=2)), ("logreg", {"inner_folds": 2})])
def test_extra_centre_neutral_puts_each_sets_neutral_mean_on_each_training_sides_own(binary, others, far, model, kwargs,
                                                                                     monkeypatch):
    """``extra_centre="neutral"``: on every training side, inner and outer, each extra set arrives moved by one
    vector so that its neutral faces' mean is that side's own neutral faces' mean; the held-out rows are not moved."""
    import facekit.selection as sel

    n_extra = [len(others.y), len(far.y)]
    sources = {n: [e.X[:, c] for e in (others, far)] for n, c in
               {478 * 3: slice(None), 478 * 2: sel._columns("xy", 478 * 3)}.items()}
    data_rows = {n: _row_set(binary.X[:, c]) for n, c in {478 * 3: slice(None), 478 * 2: sel._columns("xy", 478 * 3)}.items()}
    seen = {"sides": 0}

    def check(X_train, y_train, X_val=None):
        n = X_train.shape[1]
        own, y_own = X_train[:-sum(n_extra)], y_train[:-sum(n_extra)]
        assert _row_set(own) <= data_rows[n] and (y_own == 0).any()
        target = own[y_own == 0].mean(axis=0)  # binary: class 0 is neutral
        start = len(own)
        for k, (rows, original, extra) in enumerate(zip(n_extra, sources[n], (others, far))):
            moved = X_train[start:start + rows]
            shift = moved - original
            np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-6)  # one vector a set
            np.testing.assert_allclose(moved[extra.y == 0].mean(axis=0), target, atol=1e-6)
            start += rows
        if X_val is not None and len(X_val):
            assert _row_set(X_val) <= data_rows[n]
        seen["sides"] += 1

    real_fit, real_logreg_fit = sel.fit, sel.SelectedLogReg._fit
    monkeypatch.setattr(sel, "fit", lambda xt, yt, xv, yv, *a, **k: (check(xt, yt, xv), real_fit(xt, yt, xv, yv, *a, **k))[1])
    monkeypatch.setattr(sel.SelectedLogReg, "_fit",
                        lambda self, C, X, y, m: (check(X, y), real_logreg_fit(self, C, X, y, m))[1])
    result = crossval(binary, folds=4, model=model, progress=False, n_boot=50, extra=[others, far],
                      extra_centre="neutral", **kwargs)
    assert seen["sides"] > 4
    _check_result(result, binary)
    assert result["protocol"]["extra_centre"] == "neutral" and result["extra_train"]["centre"] == "neutral"
    info = result["extra_train"]
    assert info["n_images"] == sum(n_extra) and info["n_people"] == 8
    assert info["per_class"] == {"neutral": 32, "anxious": 32}


def test_extra_centre_neutral_undoes_a_sets_offset(binary, others):
    """The same extra people moved by one offset (another camera, another population's mean face) train the same
    models once centred; pooled as they are, they do not."""
    # in float64, so that moving a face and moving it back leaves it within ~1e-16 (float32: 1e-7, enough to
    # reorder near-tied probabilities)
    binary, others = replace(binary, X=binary.X.astype(np.float64)), replace(others, X=others.X.astype(np.float64))
    moved = replace(others, X=others.X + np.linspace(-0.5, 0.5, others.X.shape[1]))
    runs = {(centre, name): crossval(binary, folds=4, model="logreg", inner_folds=2, progress=False, n_boot=50,
                                     extra=extra, extra_centre=centre)
            for centre in ("none", "neutral") for name, extra in (("as is", others), ("moved", moved))}
    same, other = runs["neutral", "as is"], runs["neutral", "moved"]
    # the solver's last digits may still reorder one near-tied pair of probabilities: the AUC within one pair
    assert same["per_person"] == other["per_person"] and same["auc"] == pytest.approx(other["auc"], abs=0.005)
    assert [(f["C"], f["layout"], f["threshold"]) for f in same["folds_detail"]] == [
        (f["C"], f["layout"], f["threshold"]) for f in other["folds_detail"]]
    assert runs["none", "as is"]["auc"] != pytest.approx(runs["none", "moved"]["auc"], abs=0.005)
    assert runs["none", "as is"]["per_person"] != runs["none", "moved"]["per_person"]
    assert runs["none", "moved"]["protocol"]["extra_centre"] == "none"


def test_extra_centre_that_cannot_be_done_is_refused(binary, others):
    fear_only = others.subset(others.y == 1)
    with pytest.raises(ValueError, match="extra training set 1 hold no neutral photo"):
        crossval(binary, folds=4, model="majority", progress=False, extra=fear_only, extra_centre="neutral")
    with pytest.raises(ValueError, match="and none is given"):
        crossval(binary, folds=4, model="majority", progress=False, extra_centre="neutral")
    with pytest.raises(ValueError, match="extra_centre must be one of"):
        crossval(binary, folds=4, model="majority", progress=False, extra=others, extra_centre="mean")


@pytest.mark.parametrize("model,kwargs", [("resnet-mlp", dict(FAST_MLP, inner_folds=2)), ("logreg", {"inner_folds": 2})])
def test_train_on_emotions_trains_every_emotion_and_scores_anxious_against_the_rest(dataset, model, kwargs,
                                                                                    monkeypatch):
    """``train_on="emotions"``: every training call sees the emotions as classes of their own; the inner choice,
    the threshold and every number are anxious against the rest, on P(anxious)."""
    import facekit.selection as sel

    data = prepare(*dataset, Protocol(task="anxious-vs-rest"))
    names = [e for e in EMOTIONS if e in set(data.emotion)]  # 기쁨, 분노, 불안, 중립
    seen = []
    real_fit, real_logreg_fit = sel.fit, sel.SelectedLogReg._fit

    def fit_spy(xt, yt, xv, yv, mc, *a, **k):
        seen.append((set(np.unique(yt)), mc.n_classes))
        return real_fit(xt, yt, xv, yv, mc, *a, **k)

    def logreg_spy(self, C, X, y, m):
        seen.append((set(np.unique(y)), self.n_classes))
        return real_logreg_fit(self, C, X, y, m)

    monkeypatch.setattr(sel, "fit", fit_spy)
    monkeypatch.setattr(sel.SelectedLogReg, "_fit", logreg_spy)
    result = crossval(data, folds=4, model=model, progress=False, n_boot=50, train_on="emotions", **kwargs)
    assert seen and all(n == 4 and len(classes) >= 3 for classes, n in seen), "a training call on two classes"
    assert result["classes"] == ["rest", "anxious"] and result["protocol"]["train_on"] == "emotions"
    assert result["protocol"]["training_classes"] == [EMOTIONS[e] for e in names]
    if model == "resnet-mlp":  # the report gives the models' real width and classes, as the spy saw them
        assert all(c["n_classes"] == 4 for c in result["protocol"]["model_config"])
    _check_result(result, data)
    assert all(f["threshold"] is not None for f in result["folds_detail"]) and 0 <= result["auc"] <= 1
    assert "false_alarm_neutral" in result
    seen.clear()
    plain = crossval(data, folds=4, model=model, progress=False, n_boot=50, **kwargs)
    assert all(classes <= {0, 1} and n == 2 for classes, n in seen) and plain["protocol"]["train_on"] == "task"
    assert plain["protocol"]["training_classes"] == ["rest", "anxious"]


def test_train_on_emotions_scores_the_anxious_probability(dataset):
    """The wrapped models give P(anxious) of the model trained on every emotion, and choose on anxious-vs-rest."""
    from facekit.selection import SelectedLogReg

    data = prepare(*dataset, Protocol(task="anxious-vs-rest"))
    names = [e for e in EMOTIONS if e in set(data.emotion)]
    y4 = np.array([names.index(e) for e in data.emotion])
    pos = names.index("불안")
    four = SelectedLogReg(4, inner_folds=2, layouts="xy", mirror="off", positive=pos).fit(data.X, y4, data.groups)
    p = four.predict_proba(data.X)
    inner = four._proba(four.model_, data.X[:, four.columns_])
    assert p.shape == (len(data.X), 2) and inner.shape == (len(data.X), 4)
    np.testing.assert_allclose(p[:, 1], inner[:, pos])
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)
    assert four.threshold_ is not None and 0 < four.selected_["inner_val_bal_acc"] <= 1


def test_train_on_emotions_where_it_cannot_apply_is_refused(binary, others, dataset):
    with pytest.raises(ValueError, match="give --task anxious-vs-rest"):
        crossval(binary, folds=4, model="logreg", progress=False, train_on="emotions")
    rest = prepare(*dataset, Protocol(task="anxious-vs-rest"))
    with pytest.raises(ValueError, match="train_on must be one of"):
        crossval(rest, folds=4, model="logreg", progress=False, train_on="all")
    with pytest.raises(ValueError, match="with --extra-train is not supported"):
        crossval(rest, folds=4, model="logreg", progress=False, train_on="emotions",
                 extra=replace(rest, groups=np.array(["x-" + g for g in rest.groups])))
    # the majority baseline predicts the commoner task class whatever it is asked to train on: its JSON says so
    majority = crossval(rest, folds=4, model="majority", progress=False, n_boot=10, train_on="emotions")
    assert majority["protocol"]["train_on"] is None and majority["protocol"]["training_classes"] == ["rest", "anxious"]


def test_extra_training_data_that_cannot_be_used_are_refused(binary, others, dataset):
    one = replace(others, X=np.concatenate([others.X, binary.X[:1]]), y=np.concatenate([others.y, binary.y[:1]]),
                  groups=np.concatenate([others.groups, ["someone"]]))
    with pytest.raises(ValueError, match="1 photo.* also in the data cross-validated"):
        crossval(binary, folds=4, model="majority", progress=False, extra=one)
    with pytest.raises(ValueError, match="same Protocol"):
        crossval(binary, folds=4, model="majority", progress=False,
                 extra=prepare(*dataset, Protocol(task="anxious-vs-rest")))
    none = others.subset(np.zeros(len(others.y), bool))
    with pytest.raises(ValueError, match="no usable photo"):
        crossval(binary, folds=4, model="majority", progress=False, extra=none)
    named = replace(others, groups=np.where(others.groups == others.groups[0], binary.groups[0], others.groups))
    with pytest.warns(UserWarning, match=f"1 person name.*{binary.groups[0]}"):
        result = crossval(binary, folds=4, model="majority", progress=False, n_boot=20, extra=named)
    assert result["extra_train"]["shared_person_names"] == [binary.groups[0]]


def test_train_measurements_join_only_their_own_peoples_training_sides(dataset, binary, monkeypatch):
    """``train_measurements``: each training side also holds the further measurements of its own photos, and of no
    held-out person's; held-out photos are scored on the data's measurement alone; a photo that lost its face in a
    further measurement is left out of it; the result counts the rows.  (The re-framed measurements of real photos
    are ``--train-reframes``': test_cli_train_reframes.)"""
    import facekit.crossval as cv

    table, landmarks = dataset
    table2, landmarks2 = table.copy(), landmarks + np.float32(0.01)  # another measurement of the same photos
    lost = int(binary.rows[0])
    table2.loc[lost, "status"], landmarks2[lost] = "no_face", np.nan  # a face found as stored, not in this one
    second = prepare(table2, landmarks2, Protocol(task="binary"))
    third = prepare(table, landmarks - np.float32(0.01), Protocol(task="binary"))
    mine = {row.tobytes(): ("data", i) for i, row in enumerate(binary.X)}
    for name, m in (("second", second), ("third", third)):
        mine.update({row.tobytes(): (name, int(np.flatnonzero(binary.rows == r)[0])) for row, r in zip(m.X, m.rows)})
    assert len(mine) == 3 * len(binary.y) - 1  # every row tells which measurement and photo it is
    seen = []
    real = cv.run_kept

    def spy(fn, jobs, *a, **k):
        seen.extend(jobs)
        return real(fn, jobs, *a, **k)

    monkeypatch.setattr(cv, "run_kept", spy)
    result = crossval(binary, folds=4, model="logreg", progress=False, n_boot=10, inner_folds=2, layouts="xy",
                      mirror="off", train_measurements=[second, third])
    splits = cv.person_folds(binary.groups, 4, seed=0)
    assert len(seen) == 4
    for (k, X_tr, y_tr, g_tr, X_te, *_), (tr, te) in zip(seen, splits):
        rows = [mine[row.tobytes()] for row in X_tr]
        photos = sorted(i for _, i in rows)
        expected = sorted([*tr, *tr, *tr])
        if 0 in tr:
            expected.remove(0)  # the photo without a face in the second measurement
        assert photos == expected and set(g_tr) == set(binary.groups[tr])
        assert (y_tr == binary.y[[i for _, i in rows]]).all() and (g_tr == binary.groups[[i for _, i in rows]]).all()
        assert {name for name, _ in rows} == {"data", "second", "third"}
        np.testing.assert_array_equal(X_te, binary.X[te])  # scored on the data's own measurement
        assert result["folds_detail"][k]["n_train_rows"] == len(expected) and result["folds_detail"][k]["n_train"] == len(tr)
    assert result["protocol"]["train_measurements"] == 3 and result["n_train_measurement_rows"] == 2 * len(binary.y) - 1
    assert result["n_images"] == len(binary.y)
    plain = crossval(binary, folds=4, model="logreg", progress=False, n_boot=10, inner_folds=2, layouts="xy",
                     mirror="off")
    assert plain["protocol"]["train_measurements"] == 1 and "n_train_measurement_rows" not in plain
    with pytest.raises(ValueError, match="same Protocol"):
        crossval(binary, folds=4, model="logreg", progress=False, train_measurements=[prepare(*dataset, Protocol(task="anxious-vs-rest"))])
    moved = prepare(table.assign(person="x" + table["person"].astype(str)), landmarks, Protocol(task="binary"))
    with pytest.raises(ValueError, match="another class or person"):
        crossval(binary, folds=4, model="logreg", progress=False, train_measurements=[moved])


def test_measurements_weighted_per_photo(binary):
    """``measurement_weight="photo"``: a photo's K + 1 measurements together weigh one photo in logistic regression's
    loss, so two more copies of the very same measurement change nothing (the same fitted model, choices and
    scores as without them), while weighed as rows they weaken the regularisation threefold."""
    from facekit.selection import SelectedLogReg

    X, y = binary.X[:, :40], binary.y
    one = SelectedLogReg(2)._make(0.01).fit(X, y)[-1]
    tripled = (np.concatenate([X, X, X]), np.concatenate([y, y, y]))
    photo = SelectedLogReg(2, measurements=3, measurement_weight="photo")._make(0.01).fit(*tripled)[-1]
    row = SelectedLogReg(2)._make(0.01).fit(*tripled)[-1]
    np.testing.assert_allclose(photo.coef_, one.coef_, rtol=1e-3, atol=1e-5)
    assert np.abs(row.coef_).sum() > 1.2 * np.abs(one.coef_).sum()
    kw = dict(folds=4, model="logreg", progress=False, n_boot=10, inner_folds=2, mirror="off")
    plain = crossval(binary, **kw)
    same = crossval(binary, **kw, train_measurements=[binary, binary], measurement_weight="photo")
    assert same["protocol"]["measurement_weight"] == "photo" and plain["protocol"]["measurement_weight"] is None
    for a, b in zip(plain["folds_detail"], same["folds_detail"]):
        assert (a["C"], a["layout"]) == (b["C"], b["layout"]) and b["n_train_rows"] == 3 * a["n_train"]
        assert a["threshold"] == pytest.approx(b["threshold"], abs=1e-3)
    p, q = ([r["p_anxious"] for r in res["predictions"]] for res in (plain, same))
    np.testing.assert_allclose(p, q, atol=1e-3)
    with pytest.raises(ValueError, match="measurement_weight must be one of"):
        crossval(binary, **kw, train_measurements=[binary], measurement_weight="sample")


def test_threshold_rule_counts_photos_not_measurements():
    """The validation threshold is chosen only on at least 20 photos of each class (else 0.5): three measurements
    of 15 photos are still 15 photos."""
    from facekit.selection import MIN_PER_CLASS_FOR_THRESHOLD, _threshold, _thresholds

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 15)
    p = np.clip(0.6 + 0.2 * y + rng.normal(0, 0.05, 30), 0, 1)  # the best cut lies near 0.7
    assert MIN_PER_CLASS_FOR_THRESHOLD == 20 and _threshold(y, p) == 0.5
    y3, p3 = np.tile(y, 3), np.tile(p, 3)
    assert _threshold(y3, p3) != 0.5  # 45 rows a class, counted as photos
    assert _threshold(y3, p3, measurements=3) == 0.5
    assert _thresholds(y3, p3, 0.8, measurements=3)[1]["threshold_n_anxious"] == 15


def test_c_grid(binary, capsys):
    """``c_grid``: logistic regression's inner folds choose C among these values (also the MLP's fitted path's);
    the default grid given explicitly is the default run; a grid that is not positive numbers is refused."""
    from facekit import cli
    from facekit.selection import SelectedLogReg

    kw = dict(folds=4, model="logreg", progress=False, n_boot=10, inner_folds=2, mirror="off", layouts="xy")
    one = crossval(binary, **kw, c_grid=[0.5])
    assert one["protocol"]["c_grid"] == [0.5] and all(f["C"] == 0.5 for f in one["folds_detail"])
    wide = crossval(binary, **kw, c_grid=[10, 0.001, 0.01, 1])
    assert wide["protocol"]["c_grid"] == [0.001, 0.01, 1.0, 10.0]
    assert {f["C"] for f in wide["folds_detail"]} <= {0.001, 0.01, 1.0, 10.0}
    plain, given = crossval(binary, **kw), crossval(binary, **kw, c_grid=list(SelectedLogReg.GRID))
    assert plain["protocol"]["c_grid"] == list(SelectedLogReg.GRID) == given["protocol"]["c_grid"]
    assert [r["p_anxious"] for r in plain["predictions"]] == [r["p_anxious"] for r in given["predictions"]]
    with pytest.raises(ValueError, match="positive numbers"):
        crossval(binary, **kw, c_grid=[0, 1])
    for bad in ("0,1", "a,1", ","):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["crossval", "demo", "--out", "x.json", "--c-grid", bad])
        assert exit_.value.code == 2 and "expected positive numbers" in capsys.readouterr().err


def test_fold_workers():
    from facekit.jobs import fold_workers

    assert fold_workers(1, 10) == (1, None)
    assert fold_workers(8, 3) == (3, 1)  # never more processes than folds; torch has 1 thread here
    assert fold_workers(2, 10, threads=3) == (2, 3)
    assert fold_workers(None, 10)[0] == min(10, len(os.sched_getaffinity(0)))
    with pytest.raises(ValueError, match="--workers 0"):
        fold_workers(0, 10)
    with pytest.raises(ValueError, match="threads=0"):
        fold_workers(2, 10, threads=0)


def test_loso(binary):
    result = crossval(binary, folds="loso", model="majority", progress=False, n_boot=50)
    _check_result(result, binary)
    assert result["n_folds"] == 8 and all(len(f["test_people"]) == 1 for f in result["folds_detail"])
    assert result["protocol"]["folds"] == "loso"


def test_personal_neutral_protocol(dataset):
    table, landmarks = dataset
    table = table.copy()
    # syn-0000 keeps a single neutral photo: with no second one to compare it with, none of their 8 photos is scored
    table.loc[(table["person"] == "syn-0000") & table["photo_id"].isin([1, 2]), "emotion"] = "슬픔"
    data = prepare(table, landmarks, Protocol(task="binary", calibration="personal-neutral"))
    assert data.counts["n_uncalibrated"] == 8
    assert data.counts["per_class"] == {"neutral": 21, "anxious": 21} and "syn-0000" not in set(data.groups)
    settings = NormalizeSettings("kit", align=True)
    shapes = normalize(landmarks, settings)
    person = table["person"].to_numpy()
    neutral = (table["emotion"] == "중립").to_numpy()
    for k in np.flatnonzero(data.y == 1)[:3]:
        row = data.rows[k]
        # the person's neutral photos but one: the non-neutral photos leave them out by turns, in row order
        own, rest = (np.flatnonzero((person == person[row]) & m) for m in (neutral, ~neutral))
        ref = shapes[np.delete(own, list(rest).index(row) % len(own))].mean(axis=0)
        np.testing.assert_allclose(data.X[k], features((shapes[row] - ref)[None])[0], atol=1e-5)
    result = crossval(data, folds=4, model="majority", progress=False, n_boot=20)
    assert result["protocol"]["calibration"] == "personal-neutral" and result["n_uncalibrated"] == 8
    with pytest.raises(ValueError, match="calibration"):
        prepare(table, landmarks, Protocol(calibration="per-photo"))


def test_folds_larger_than_people_is_an_error(binary):
    with pytest.raises(ValueError, match="--folds 9"):
        crossval(binary, folds=9, model="majority", progress=False)


# ----------------------------------------------------------------------------- command line on JAFFE


@pytest.fixture(scope="module")
def jaffe_cli(jaffe_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crossval_cli")
    out, cache = tmp / "jaffe.json", tmp / "cache"
    env = dict(os.environ, FACEKIT_CACHE=str(cache), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    args = [sys.executable, "-m", "facekit", "crossval", str(jaffe_root), "--out", str(out), "--cache", str(cache),
            "--model", "resnet-mlp", "--folds", "3", "--inner-folds", "1", "--epochs", "3", "--workers", "1"]
    proc = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    return proc, out, cache


def test_cli_crossval_on_jaffe(jaffe_cli):
    proc, out, cache = jaffe_cli
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out}" in proc.stdout
    assert "folds" in proc.stderr  # the progress bar
    result = json.loads(out.read_text())
    for key in REQUIRED:
        assert key in result, key
    assert result["task"] == "binary" and result["classes"] == ["neutral", "anxious"]
    assert result["n_images"] == 62 and result["n_people"] == 10
    assert isinstance(result["n_failed"], int) and result["n_failed"] >= 0
    assert result["source"] == "jaffe" and result["model"] == "resnet-mlp"
    # the default linear path: each fold says which way its inner folds chose, with the C when fitted
    assert result["protocol"]["linear_path"] == "auto"
    for f in result["folds_detail"]:
        assert f["linear_path"] in ("trained", "fitted") and (f["linear_C"] is not None) == (f["linear_path"] == "fitted")
        assert any(k.endswith("/fitted") for k in f["inner_scores"]) and len(f["inner_scores"]) == 5
    assert set(result["recall"]) == {"neutral", "anxious"}
    assert 0 <= result["auc"] <= 1 and 0 <= result["balanced_accuracy"] <= 1
    # folds never share a person, and every person is in exactly one fold
    folds = [set(f["test_people"]) for f in result["folds_detail"]]
    assert len(folds) == 3 == result["n_folds"]
    assert sum(len(f) for f in folds) == len(set().union(*folds)) == 10
    assert sum(f["n_test"] for f in result["folds_detail"]) == 62
    per = result["per_person"]
    assert sorted(r["person"] for r in per) == sorted(set().union(*folds))
    assert sum(r["photos"] for r in per) == 62
    # JAFFE has five other expressions: the binary model's false alarms on them
    assert 0 <= result["false_alarm_other"] <= 1
    assert result["n_other_scored"] == result["n_other_emotions"] > 0
    assert set(result["false_alarm_by_emotion"]) <= set(EMOTIONS.values()) - {"neutral", "anxious"}
    assert any(Path(cache).rglob("*")), "the landmark cache was filled"
    # every photo's out-of-fold probabilities, beside the JSON: the metrics above come from them
    from facekit.crossval import read_predictions

    assert result["predictions_file"] == "jaffe.predictions.csv" and "jaffe.predictions.csv" in proc.stdout
    table = read_predictions(out.with_name(result["predictions_file"]))
    assert list(table.columns) == ["container", "member", "person", "emotion", "label", "fold", "p_neutral",
                                   "p_anxious", "threshold", "predicted", "correct"]
    assert len(table) == 62 + result["n_other_scored"] and not table.duplicated(["container", "member"]).any()
    assert all((Path(c) / m).is_file() for c, m in zip(table["container"], table["member"]))
    # JAFFE's names, KA.FE1.45.tiff: person NA stays "NA", not a missing value
    assert (table["person"] == [m.split(".")[0] for m in table["member"]]).all() and "NA" in set(table["person"])
    assert table["correct"].notna().sum() == 62 and table["fold"].dtype.kind == "i"
    fold_of = {p: f["fold"] for f in result["folds_detail"] for p in f["test_people"]}
    assert (table["fold"] == table["person"].map(fold_of)).all()
    scored = table[table["label"].notna()]
    assert scored["label"].value_counts().to_dict() == {"anxious": 32, "neutral": 30}
    assert scored["correct"].mean() == pytest.approx(result["accuracy"])
    others = table[table["label"].isna()]
    assert (others["predicted"] == "anxious").mean() == pytest.approx(result["false_alarm_other"])


def test_cli_crossval_workers_give_the_same_json(jaffe_cli, jaffe_root, tmp_path):
    """``--workers 2`` trains the folds in two processes: the JSON is the ``--workers 1`` run's (one thread each)."""
    _proc, out1, cache = jaffe_cli
    out2 = tmp_path / "jaffe2.json"
    env = dict(os.environ, FACEKIT_CACHE=str(cache), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    args = [sys.executable, "-m", "facekit", "crossval", str(jaffe_root), "--out", str(out2), "--cache", str(cache),
            "--model", "resnet-mlp", "--folds", "3", "--inner-folds", "1", "--epochs", "3", "--workers", "2"]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert two["machine"]["workers"] == 2 and one["machine"]["workers"] == 1
    for r in (one, two):
        for key in ("runtime_s", "machine", "created", "predictions_file"):
            r.pop(key)
    assert one == two
    assert out1.with_name("jaffe.predictions.csv").read_bytes() == out2.with_name("jaffe2.predictions.csv").read_bytes()


def _process_group(pgid: int) -> list[int]:
    """The live processes of a process group (from /proc; zombies are not alive)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.parametrize("to", ["group", "process"])
def test_cli_crossval_interrupted_stops_its_workers(jaffe_cli, jaffe_root, tmp_path, to):
    """Ctrl-C while two worker processes train, as a terminal sends it (SIGINT to the whole process group)
    or as JupyterLab's "interrupt kernel" does (to the main process only): the command says what is kept
    and exits 130, no worker is left running, and Python has no leaked semaphore to warn about."""
    import signal
    import threading
    import time

    _proc, _out, cache = jaffe_cli
    env = dict(os.environ, FACEKIT_CACHE=str(cache), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "facekit", "crossval", str(jaffe_root), "--out", str(tmp_path / "never.json"),
            "--cache", str(cache), "--folds", "3", "--inner-folds", "1", "--epochs", "2000", "--workers", "2"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True,  # SIGINT as a terminal's, even where this job ignores it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = bytearray()
    reader = threading.Thread(target=lambda: [err.extend(c) for c in iter(lambda: proc.stderr.read1(4096), b"")],
                              daemon=True)
    reader.start()
    try:
        def workers():
            found = []
            for pid in _process_group(proc.pid):
                try:
                    if b"LokyProcess" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        found.append(pid)
                except OSError:  # it ended meanwhile
                    pass
            return found

        deadline = time.time() + 120
        while len(workers()) < 2 and time.time() < deadline:
            assert proc.poll() is None, err.decode(errors="replace")[-2000:]
            time.sleep(0.5)
        assert len(workers()) == 2, "the two workers did not start"
        time.sleep(5)  # they are training
        (os.killpg if to == "group" else os.kill)(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        reader.join(timeout=10)
        text = err.decode(errors="replace")
        assert "interrupted: the landmarks extracted so far are cached" in text
        assert "leaked" not in text and "Traceback" not in text, text[-2000:]
        deadline = time.time() + 30
        while _process_group(proc.pid) and time.time() < deadline:
            time.sleep(0.5)
        assert _process_group(proc.pid) == [], "worker processes outlived the interrupted command"
        assert not (tmp_path / "never.json").exists()
    finally:
        if _process_group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def test_cli_crossval_interrupted_goes_on_from_its_finished_folds(jaffe_cli, jaffe_root, tmp_path):
    """Ctrl-C after a fold has finished: the command says where its folds are kept, the same command started
    again trains only the others and writes exactly the JSON of an uninterrupted run, then removes the folds;
    ``--fresh`` trains everything anew."""
    import signal
    import time

    _proc, _out, cache = jaffe_cli
    env = dict(os.environ, FACEKIT_CACHE=str(cache), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = tmp_path / "jaffe.json"
    store = tmp_path / "jaffe.json.folds"
    args = [sys.executable, "-m", "facekit", "crossval", str(jaffe_root), "--out", str(out), "--cache", str(cache),
            "--folds", "3", "--inner-folds", "1", "--epochs", "60", "--workers", "1"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while not (store / "fold000.npz").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "it finished before it could be interrupted"
        assert (store / "fold000.npz").exists(), "no fold finished in time"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert f"the folds finished so far are kept in {store}; run the same command again to go on from them" in err
    kept = sorted(f.name for f in store.glob("fold*.npz"))
    assert 1 <= len(kept) < 3 and not out.exists()

    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{store}: reusing {len(kept)} of 3 folds finished by an earlier run" in again.stderr
    resumed = json.loads(out.read_text())
    assert resumed["resumed_folds"] == [int(name[4:7]) for name in kept]
    assert not store.exists(), "the kept folds are removed once the results are written"

    # --fresh: the folds kept for this --out (here a damaged one) are dropped and all three trained
    fresh_store = tmp_path / "fresh.json.folds"
    fresh_store.mkdir()
    (fresh_store / "fold001.npz").write_bytes(b"damaged")
    fresh = subprocess.run([*args, "--fresh", "--out", str(tmp_path / "fresh.json")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    whole = json.loads((tmp_path / "fresh.json").read_text())
    assert whole["resumed_folds"] == [] and "reusing" not in fresh.stderr and "cannot be read" not in fresh.stderr
    assert _same_numbers(resumed, whole)
    assert (tmp_path / "jaffe.predictions.csv").read_bytes() == (tmp_path / "fresh.predictions.csv").read_bytes()
    assert not fresh_store.exists()


@pytest.mark.parametrize("choice, linear_skips, linear_path, extra", [
    ("none", [False], None, []),
    ("choose", [False, True], "trained", []),
    ("trained", [True], "trained", ["--min-recall", "0.8", "--task", "anxious-vs-rest"]),
])
def test_cli_linear_path_and_min_recall(jaffe_cli, jaffe_root, tmp_path, capsys, choice, linear_skips, linear_path,
                                        extra):
    """``--linear-path none`` runs the model without the linear path, ``choose`` lets the inner folds choose
    with or without it: every row of TRAINING_DETAIL section 6.1 can be reproduced from the command line.
    ``--min-recall`` reports both operating points of the same models."""
    from facekit import cli

    _proc, _out, cache = jaffe_cli
    out = tmp_path / f"{choice}.json"
    assert cli.main(["crossval", str(jaffe_root), "--out", str(out), "--cache", str(cache), "--folds", "2",
                     "--inner-folds", "1", "--epochs", "2", "--workers", "1", "--linear-path", choice, *extra]) == 0
    result = json.loads(out.read_text())
    configs = result["protocol"]["model_config"]
    configs = configs if isinstance(configs, list) else [configs]
    assert [c["linear_skip"] for c in configs] == linear_skips
    # the widths the fold models were built with: the inner folds chose between xyz and xy
    assert all(c["n_features"] == [1434, 956] and c["n_classes"] == 2 for c in configs)
    assert result["protocol"]["linear_path"] == linear_path
    assert all(f["linear_skip"] in linear_skips for f in result["folds_detail"])
    printed = capsys.readouterr().out
    if extra:
        assert result["protocol"]["min_recall"] == 0.8 and result["task"] == "anxious-vs-rest"
        assert 0 <= result["balanced_threshold"]["false_alarm_other"] <= 1
        assert "the same models at the balanced-accuracy thresholds" in printed
        # one inner validation draw of ~4 JAFFE people holds far fewer than 20 fear photos: every fold is thin
        assert result["min_recall_thin_folds"] == [0, 1]
        assert all(0 < f["threshold_n_anxious"] < 20 for f in result["folds_detail"])
        assert "rests on fewer than 20 anxious validation photos" in printed
        # both operating points per photo; anxious-vs-rest scores every emotion in the task
        from facekit.crossval import read_predictions

        table = read_predictions(tmp_path / f"{choice}.predictions.csv")
        assert len(table) == result["n_images"] == 213 and table["label"].notna().all()
        assert set(table["label"]) == {"rest", "anxious"} and set(table["emotion"]) > {"neutral", "anxious", "happy"}
        assert (table["predicted_balanced"] == "anxious").mean() == pytest.approx(
            result["balanced_threshold"]["false_alarm_other"] * result["n_other_scored"] / 213
            + result["balanced_threshold"]["false_alarm_neutral"] * (table["emotion"] == "neutral").sum() / 213
            + result["balanced_threshold"]["recall"]["anxious"] * (table["emotion"] == "anxious").sum() / 213)
    else:
        assert "balanced_threshold" not in result


def test_cli_extra_train_adds_other_people_to_training_only(jaffe_cli, jaffe_root, ckplus_root, tmp_path, capsys):
    """``--extra-train ckplus``: CK+'s people join every training side; JAFFE's people alone are tested, and the
    JSON says what was added.  The data set itself given as extra data is refused, naming it."""
    from facekit import cli

    _proc, _out, cache = jaffe_cli
    out = tmp_path / "plus.json"
    args = ["crossval", str(jaffe_root), "--cache", str(cache), "--model", "logreg", "--folds", "3", "--inner-folds",
            "2", "--layouts", "xy", "--mirror", "off", "--workers", "1"]
    assert cli.main([*args, "--out", str(out), "--extra-train", str(ckplus_root)]) == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 62 and result["n_people"] == 10 and result["protocol"]["extra_train"] is True
    extra = result["extra_train"]
    assert extra["sets"] == [{"data": str(ckplus_root), "source": "ckplus", "n_rows": extra["n_rows"]}]
    assert extra["per_class"]["anxious"] == 25 and extra["n_people"] > 100 and extra["shared_person_names"] == []
    assert extra["n_images"] == extra["per_class"]["neutral"] + 25 and extra["n_other_emotions"] > 0
    assert sorted(p for f in result["folds_detail"] for p in f["test_people"]) == sorted(
        r["person"] for r in result["per_person"]) and len(result["per_person"]) == 10
    centred = tmp_path / "centred.json"
    assert cli.main([*args, "--out", str(centred), "--extra-train", str(ckplus_root), "--extra-centre", "neutral"]) == 0
    centred = json.loads(centred.read_text())
    assert centred["protocol"]["extra_centre"] == "neutral" and centred["extra_train"]["centre"] == "neutral"
    assert result["protocol"]["extra_centre"] == "none" and centred["extra_train"]["n_images"] == extra["n_images"]
    assert centred["per_person"] != result["per_person"] or centred["auc"] != result["auc"]
    capsys.readouterr()
    assert cli.main([*args, "--out", str(tmp_path / "alone.json"), "--extra-centre", "neutral"]) == 2
    assert "--extra-centre neutral places the --extra-train data sets" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "self.json"), "--extra-train", str(jaffe_root)]) == 2
    assert f"--extra-train {jaffe_root} is the data cross-validated itself" in capsys.readouterr().err
    assert not (tmp_path / "self.json").exists()


def test_cli_train_on_emotions(jaffe_cli, jaffe_root, tmp_path, capsys):
    """``--task anxious-vs-rest --train-on emotions`` on JAFFE: its seven emotions train, fear against the rest is
    scored; with the binary task it is refused (exit 2) before any work."""
    from facekit import cli

    _proc, _out, cache = jaffe_cli
    out = tmp_path / "emotions.json"
    args = ["crossval", str(jaffe_root), "--cache", str(cache), "--model", "logreg", "--folds", "3", "--inner-folds",
            "2", "--layouts", "xy", "--mirror", "off", "--workers", "1"]
    assert cli.main([*args, "--out", str(out), "--task", "anxious-vs-rest", "--train-on", "emotions"]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"]["train_on"] == "emotions" and len(result["protocol"]["training_classes"]) == 7
    assert result["classes"] == ["rest", "anxious"] and result["n_images"] == 213 and len(result["per_person"]) == 10
    assert 0 < result["recall"]["anxious"] <= 1 and result["false_alarm_other"] is not None
    capsys.readouterr()
    assert cli.main([*args, "--out", str(tmp_path / "binary.json"), "--train-on", "emotions"]) == 2
    assert "give --task anxious-vs-rest" in capsys.readouterr().err and not (tmp_path / "binary.json").exists()


def test_crossval_default_has_the_linear_path():
    import inspect

    from facekit.selection import DEFAULT_MODEL_CONFIG, SelectedResNetMLP, make_model

    assert DEFAULT_MODEL_CONFIG.linear_skip and not ModelConfig().linear_skip  # ModelConfig() keeps old checkpoints
    for fn in (crossval, make_model, SelectedResNetMLP.__init__):
        assert inspect.signature(fn).parameters["model_config"].default == DEFAULT_MODEL_CONFIG


def test_inner_folds_choose_among_model_configs(binary):
    from facekit.selection import make_model

    configs = (FAST_MLP["model_config"], replace(FAST_MLP["model_config"], linear_skip=True))
    clf = make_model("resnet-mlp", 2, inner_folds=1, model_config=configs, mirror="on", linear_path="trained",
                     train_config=FAST_MLP["train_config"]).fit(binary.X, binary.y, binary.groups)
    assert set(clf.inner_scores_) == {"xyz/config0", "xy/config0", "xyz/config1", "xy/config1"}
    chosen = clf.selected_["model_config"]
    assert clf.selected_["linear_skip"] == configs[chosen].linear_skip == (clf.model_.linear is not None)
    assert clf.selected_["inner_val_bal_acc"] == max(clf.inner_scores_.values())
    result = crossval(binary, folds=4, model="resnet-mlp", progress=False, n_boot=50, inner_folds=1,
                      model_config=configs, train_config=FAST_MLP["train_config"], linear_path="trained")
    assert [c["linear_skip"] for c in result["protocol"]["model_config"]] == [False, True]
    assert all(f["model_config"] in (0, 1) for f in result["folds_detail"])


def test_fitted_linear_path_takes_what_logistic_regression_selects(binary):
    """``linear_path="fitted"``: the layout, mirroring and C are logistic regression's choice on the same inner
    folds; the epoch, 0 (the linear model alone) included, is chosen as before."""
    from facekit.selection import LINEAR_PATHS, SelectedLogReg, make_model

    mc = replace(FAST_MLP["model_config"], linear_skip=True)
    clf = make_model("resnet-mlp", 2, inner_folds=2, model_config=mc, train_config=FAST_MLP["train_config"],
                     linear_path="fitted").fit(binary.X, binary.y, binary.groups)
    lr = SelectedLogReg(2, inner_folds=2).fit(binary.X, binary.y, binary.groups)
    assert (clf.layout_, clf.mirror_, clf.selected_["linear_C"]) == (lr.layout_, lr.mirror_, lr.C_)
    assert clf.selected_["linear_path"] == "fitted" and len(clf.inner_scores_) == 1
    assert 0 <= clf.epoch_ <= FAST_MLP["train_config"].epochs and len(clf.inner_curves_[clf.layout_]) == 5
    assert not clf.model_.linear.weight.requires_grad
    result = crossval(binary, folds=3, model="resnet-mlp", progress=False, n_boot=20, inner_folds=2,
                      model_config=mc, train_config=FAST_MLP["train_config"], linear_path="fitted")
    assert result["protocol"]["linear_path"] == "fitted"
    assert all(f["linear_path"] == "fitted" and f["linear_C"] in SelectedLogReg.GRID for f in result["folds_detail"])
    with pytest.raises(ValueError, match="linear_path"):
        make_model("resnet-mlp", 2, linear_path="frozen")
    assert LINEAR_PATHS == ("fitted", "trained", "auto")


def test_auto_linear_path_chooses_between_trained_and_fitted_on_the_inner_folds(binary):
    """``linear_path="auto"`` (the default): the candidates of ``trained`` (layouts × mirrorings) and ``fitted``
    (logistic regression's layout, mirroring and C) are scored on the same inner folds, with the same scores
    as when each runs alone, and the best one is kept, frozen linear path and all when it is the fitted one."""
    from facekit.selection import DEFAULT_LINEAR_PATH, SelectedLogReg, make_model

    assert DEFAULT_LINEAR_PATH == "auto"
    mc = replace(FAST_MLP["model_config"], linear_skip=True)
    kw = dict(inner_folds=2, model_config=mc, train_config=FAST_MLP["train_config"])
    runs = {lp: make_model("resnet-mlp", 2, linear_path=lp, **kw).fit(binary.X, binary.y, binary.groups)
            for lp in ("trained", "fitted", "auto")}
    auto, trained, fitted = runs["auto"], runs["trained"], runs["fitted"]
    lr = SelectedLogReg(2, inner_folds=2).fit(binary.X, binary.y, binary.groups)
    fitted_name = f"{lr.layout_}/fitted"
    assert set(auto.inner_scores_) == set(trained.inner_scores_) | {fitted_name}
    for name, score in trained.inner_scores_.items():
        assert auto.inner_scores_[name] == score
    assert auto.inner_scores_[fitted_name] == fitted.inner_scores_[lr.layout_]
    assert auto.selected_["inner_val_bal_acc"] == max(auto.inner_scores_.values())
    winner = fitted if auto.selected_["inner_val_bal_acc"] == fitted.selected_["inner_val_bal_acc"] else trained
    assert auto.selected_["linear_path"] == winner.selected_["linear_path"]
    assert (auto.layout_, auto.epoch_, auto.mirror_, auto.threshold_) == (winner.layout_, winner.epoch_,
                                                                          winner.mirror_, winner.threshold_)
    assert np.allclose(auto.predict_proba(binary.X), winner.predict_proba(binary.X))
    frozen = auto.selected_["linear_path"] == "fitted"
    assert (auto.selected_["linear_C"] == lr.C_) if frozen else auto.selected_["linear_C"] is None
    assert auto.model_.linear.weight.requires_grad is not frozen


def test_mlp_ensemble_averages_its_networks(binary):
    from facekit.selection import make_model

    clf = make_model("resnet-mlp", 2, inner_folds=1, ensemble=2, **FAST_MLP).fit(binary.X, binary.y, binary.groups)
    assert len(clf.models_) == 2 and clf.selected_["ensemble"] == 2
    one, two = (predict_proba(m, binary.X[:, clf.columns_]) for m in clf.models_)
    assert not np.allclose(one, two)  # different seeds, different networks
    np.testing.assert_allclose(clf.predict_proba(binary.X), (one + two) / 2, rtol=0, atol=1e-6)


def test_identity_directions_come_from_each_training_side_alone(binary, monkeypatch):
    """``identity_dims``: every call that learns identity directions sees the people of the training side being
    fitted, never a held-out one: an inner fold's own training people, or the outer fold's for its final model."""
    import facekit.crossval as cv
    import facekit.selection as sel

    calls, current = [], {}
    real_fold, real_directions = cv._fit_fold, sel.identity_directions

    def fold_spy(k, X_tr, y_tr, g_tr, *a, **kw):
        current["people"], current["fold"] = set(g_tr), k
        return real_fold(k, X_tr, y_tr, g_tr, *a, **kw)

    def directions_spy(X, strata, persons, mirror=None):
        people = set(np.asarray(persons))
        assert people <= current["people"], "identity directions learned from a held-out person"
        assert len(np.asarray(strata)) == len(X) and mirror is not None
        calls.append((current["fold"], people == current["people"]))
        return real_directions(X, strata, persons, mirror)

    monkeypatch.setattr(cv, "_fit_fold", fold_spy)
    monkeypatch.setattr(sel, "identity_directions", directions_spy)
    result = crossval(binary, folds=4, model="logreg", progress=False, n_boot=50, inner_folds=2,
                      identity_dims="auto")
    _check_result(result, binary)
    assert result["protocol"]["identity_dims"] == "auto" and result["protocol"]["identity_dims_grid"] == [0, 4, 16]
    for k, fold in enumerate(result["folds_detail"]):
        inner = [full for f, full in calls if f == k]
        assert inner.count(False) >= 2  # each inner fold (per layout) learns from its own training people
        assert inner.count(True) == (1 if fold["identity_dims"] else 0)  # the final model, from the whole side
        assert fold["identity_dims"] in (0, 4, 16) and set(fold["inner_scores_by_identity_dims"]) == {"0", "4", "16"}
        assert fold["inner_val_bal_acc"] == max(fold["inner_scores_by_identity_dims"].values())
        people = len(set(binary.groups)) - len(fold["test_people"])
        assert fold["identity_dims_removed"] <= min(fold["identity_dims"], 2 * people - 1)


def test_identity_dims_off_changes_nothing(binary):
    base = crossval(binary, folds=4, model="logreg", progress=False, n_boot=50, inner_folds=2)
    for off in ("off", 0):
        assert _same_numbers(crossval(binary, folds=4, model="logreg", progress=False, n_boot=50, inner_folds=2,
                                      identity_dims=off), base)
    assert base["protocol"]["identity_dims"] == 0 and "identity_dims" not in base["folds_detail"][0]


def test_removing_identity_directions_ranks_faces_that_differ_by_person_along_the_expression():
    """Six people whose faces differ along three shape directions, one of them partly fear's (TRAINING_DETAIL
    section 7 item 16): leave-one-person-out, plain logistic regression ranks fear poorly across people (one
    person's neutral face looks like another's fear), and without the training people's four leading identity
    directions it ranks every fear photo above every neutral one."""
    from sklearn.metrics import roc_auc_score

    from facekit.selection import SelectedLogReg
    from test_calibration import _identity_data

    X, y, persons, _ = _identity_data(n_people=6, noise=0.03, seed=2)
    auc = {}
    for dims in (0, 4):
        scores = np.zeros(len(y))
        for p in np.unique(persons):
            te = persons == p
            clf = SelectedLogReg(2, inner_folds=3, layouts="xyz", mirror="off", identity_dims=dims)
            scores[te] = clf.fit(X[~te], y[~te], persons[~te]).predict_proba(X[te])[:, 1]
            assert clf.identity_dims_ == dims and (clf.directions_ is None) == (dims == 0)
        auc[dims] = roc_auc_score(y, scores)
    assert auc[0] < 0.9 and auc[4] > 0.99, auc


@pytest.mark.parametrize("linear_path", ["trained", "auto"])
def test_mlp_removes_the_identity_directions_logistic_regression_chooses(binary, linear_path):
    from facekit.calibration import identity_directions, remove_directions
    from facekit.selection import SelectedLogReg, make_model
    from facekit.train import _mirror_features

    mc = replace(FAST_MLP["model_config"], linear_skip=True)
    clf = make_model("resnet-mlp", 2, inner_folds=2, model_config=mc, train_config=FAST_MLP["train_config"],
                     linear_path=linear_path, identity_dims="auto").fit(binary.X, binary.y, binary.groups,
                                                                        strata=binary.emotion)
    lr = SelectedLogReg(2, inner_folds=2, identity_dims="auto").fit(binary.X, binary.y, binary.groups,
                                                                   strata=binary.emotion)
    assert clf.selected_["identity_dims"] == lr.identity_dims_ == clf.identity_dims_
    assert clf.selected_["linear_inner_scores_by_identity_dims"] == lr.selected_["inner_scores_by_identity_dims"]
    Xc = binary.X[:, clf.columns_]
    if clf.identity_dims_:
        expected = identity_directions(Xc, binary.emotion, binary.groups, _mirror_features)[:, :clf.identity_dims_]
        np.testing.assert_allclose(clf.directions_, expected)
    else:
        assert clf.directions_ is None
    # the model scores faces without those directions
    np.testing.assert_allclose(clf.predict_proba(binary.X),
                               predict_proba(clf.model_, remove_directions(Xc, clf.directions_)), rtol=1e-5)
    fixed = make_model("resnet-mlp", 2, inner_folds=2, model_config=mc, train_config=FAST_MLP["train_config"],
                       linear_path="trained", identity_dims=4).fit(binary.X, binary.y, binary.groups)
    assert fixed.identity_dims_ == 4 and fixed.directions_.shape[1] == 4  # a count is used as it is, strata = y


def test_identity_dims_where_they_cannot_apply_are_refused(binary, others):
    from facekit.selection import make_model

    with pytest.raises(ValueError, match="not combined with --extra-train"):
        crossval(binary, folds=4, model="logreg", progress=False, identity_dims="auto", extra=others)
    with pytest.raises(ValueError, match="majority baseline learns from none"):
        crossval(binary, folds=4, model="majority", progress=False, identity_dims=4)
    for bad in ("x", "-1", 2.5, True):
        with pytest.raises(ValueError, match="identity_dims must be"):
            crossval(binary, folds=4, model="logreg", progress=False, identity_dims=bad)
    with pytest.raises(ValueError, match="not combined with --extra-train"):
        make_model("logreg", 2, identity_dims="auto").fit(binary.X, binary.y, binary.groups, (others.X, others.y))


def test_cli_identity_dims(jaffe_cli, jaffe_root, ckplus_root, tmp_path, capsys):
    """``--identity-dims auto`` on JAFFE: the JSON says what each fold removed; with ``--extra-train`` or a value
    that is not a count it is refused (exit 2) before any landmark is read."""
    from facekit import cli

    _proc, _out, cache = jaffe_cli
    out = tmp_path / "identity.json"
    args = ["crossval", str(jaffe_root), "--cache", str(cache), "--model", "logreg", "--folds", "3", "--inner-folds",
            "2", "--layouts", "xy", "--mirror", "off", "--workers", "1"]
    assert cli.main([*args, "--out", str(out), "--identity-dims", "auto"]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"]["identity_dims"] == "auto" and result["n_images"] == 62
    assert all(f["identity_dims"] in (0, 4, 16) and f["identity_dims_removed"] <= f["identity_dims"]
               for f in result["folds_detail"])
    assert 0 < result["auc"] <= 1 and len(result["per_person"]) == 10
    capsys.readouterr()
    refused = tmp_path / "refused.json"
    assert cli.main([*args, "--out", str(refused), "--identity-dims", "auto", "--extra-train", str(ckplus_root)]) == 2
    err = capsys.readouterr().err
    assert "not combined with --extra-train" in err and "from the landmark cache" not in err
    assert cli.main([*args, "--out", str(refused), "--identity-dims", "some"]) == 2
    assert "identity_dims must be 'auto', 'off' or a count" in capsys.readouterr().err
    assert not refused.exists()


def test_cli_remeasure(jaffe_cli, jaffe_root, tmp_path, capsys):
    """``--remeasure 2``: every JAFFE photo measured twice (a cache of its own beside the default one), the JSON says
    so; ``--remeasure 0`` is a usage error before anything is read."""
    from facekit import cli
    from facekit import extract as ex

    _proc, default_out, cache = jaffe_cli
    assert json.loads(default_out.read_text())["remeasure"] == 1
    folders = {p.name for p in (cache / "landmarks").iterdir()}
    out = tmp_path / "remeasure.json"
    args = ["crossval", str(jaffe_root), "--cache", str(cache), "--model", "logreg", "--folds", "3", "--inner-folds",
            "2", "--layouts", "xy", "--mirror", "off", "--workers", "1"]
    assert cli.main([*args, "--out", str(out), "--remeasure", "2"]) == 0
    result = json.loads(out.read_text())
    assert result["remeasure"] == 2 and result["n_images"] == 62 and result["n_failed"] == 0
    added = {p.name for p in (cache / "landmarks").iterdir()} - folders
    assert len(added) == 1 and added.pop().endswith(ex.ExtractSettings(remeasure=2).key())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--out", str(tmp_path / "refused.json"), "--remeasure", "0"])
    assert exit_.value.code == 2 and "expected a whole number >= 1" in capsys.readouterr().err


def test_cli_reframe(jaffe_cli, jaffe_root, tmp_path, capsys):
    """``--reframe 2 --reframe-seed 1``: every JAFFE photo measured shifted (a cache of its own), the JSON says so and
    the landmarks differ from the photos as they are; a negative value is a usage error."""
    from facekit import cli
    from facekit import extract as ex
    from facekit.crossval import read_predictions

    _proc, default_out, cache = jaffe_cli
    default = json.loads(default_out.read_text())
    assert default["reframe"] == 0 and default["reframe_seed"] == 0
    folders = {p.name for p in (cache / "landmarks").iterdir()}
    args = ["crossval", str(jaffe_root), "--cache", str(cache), "--model", "logreg", "--folds", "3", "--inner-folds",
            "2", "--layouts", "xy", "--mirror", "off", "--workers", "1"]
    outs = {}
    for reframe, seed in ((0, 0), (2, 1)):
        outs[reframe] = tmp_path / f"reframe{reframe}.json"
        assert cli.main([*args, "--out", str(outs[reframe]), "--reframe", str(reframe), "--reframe-seed", str(seed)]) == 0
    result = json.loads(outs[2].read_text())
    assert result["reframe"] == 2 and result["reframe_seed"] == 1 and result["n_images"] == 62
    added = {p.name for p in (cache / "landmarks").iterdir()} - folders
    assert len(added) == 1 and added.pop().endswith(ex.ExtractSettings(reframe=2, reframe_seed=1).key())
    plain, shifted = (read_predictions(outs[r].with_name(outs[r].stem + ".predictions.csv")) for r in (0, 2))
    assert not np.allclose(plain["p_anxious"], shifted["p_anxious"])  # other landmarks, other scores
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--out", str(tmp_path / "refused.json"), "--reframe", "-1"])
    assert exit_.value.code == 2 and "expected a whole number >= 0" in capsys.readouterr().err


def test_cli_train_reframes(jaffe_cli, jaffe_root, tmp_path, capsys):
    """``--reframe 2 --reframe-seed 1 --train-reframes 1``: the training sides also hold every JAFFE photo as
    measured with ``--reframe-seed 2``, the held-out photos are scored as measured with seed 1, and the JSON says so;
    without a shift to draw, or ``--train-reframe-px`` alone, the command is refused before any work."""
    from facekit import cli
    from facekit import extract as ex

    _proc, _default_out, cache = jaffe_cli
    args = ["crossval", str(jaffe_root), "--cache", str(cache), "--model", "logreg", "--folds", "3", "--inner-folds",
            "2", "--layouts", "xy", "--mirror", "off", "--workers", "1"]
    out = tmp_path / "augmented.json"
    assert cli.main([*args, "--out", str(out), "--reframe", "2", "--reframe-seed", "1", "--train-reframes", "1"]) == 0
    result = json.loads(out.read_text())
    assert result["train_reframes"] == {"k": 1, "px": 2, "reframe_seeds": [2], "weight": "row"}
    assert result["reframe_seed"] == 1 and result["arguments"]["train_reframes"] == 1
    assert result["protocol"]["train_measurements"] == 2 and result["n_images"] == 62
    key = ex.ExtractSettings(reframe=2, reframe_seed=2).key()  # the training measurement has its own cache
    assert any(p.name.endswith(key) for p in (cache / "landmarks").iterdir())
    assert result["n_train_measurement_rows"] == 62  # JAFFE loses no face when re-framed
    for fold in result["folds_detail"]:
        assert fold["n_train_rows"] == 2 * fold["n_train"]
    capsys.readouterr()
    assert cli.main([*args, "--out", str(tmp_path / "a.json"), "--train-reframes", "2"]) == 2
    assert "give --train-reframe-px PX" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "b.json"), "--train-reframe-px", "2"]) == 2
    assert "give --train-reframes K too" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "c.json"), "--train-reframes-weight", "photo"]) == 2
    assert "give --train-reframes K too" in capsys.readouterr().err
    assert not any((tmp_path / f"{n}.json").exists() for n in "abc")


def test_cli_reframe_draws(jaffe_cli, jaffe_root, tmp_path, capsys, monkeypatch):
    """``--reframe 2 --reframe-seed 1 --reframe-draws 2``: each draw is the run of its own ``--reframe-seed``, written
    beside ``--out``; ``--out`` holds their mean, sd and range; a run stopped in its second draw goes on from the
    first draw's kept folds; ``--reframe-draws`` without ``--reframe`` is refused."""
    from facekit import cli
    from facekit.crossval import read_predictions
    from facekit.paths import fold_store_path

    _proc, _default_out, cache = jaffe_cli
    args = ["crossval", str(jaffe_root), "--cache", str(cache), "--model", "logreg", "--folds", "3", "--inner-folds",
            "2", "--layouts", "xy", "--mirror", "off", "--workers", "1", "--reframe", "2"]
    out = tmp_path / "draws.json"
    paths = [cli.draw_path(out, seed) for seed in (1, 2)]
    real_run = cli._crossval_run

    def stopped_in_draw_2(one, path, keep_folds=False):
        if one.reframe_seed == 2:
            raise KeyboardInterrupt
        return real_run(one, path, keep_folds)

    monkeypatch.setattr(cli, "_crossval_run", stopped_in_draw_2)
    assert cli.main([*args, "--out", str(out), "--reframe-seed", "1", "--reframe-draws", "2"]) == 130
    assert str(fold_store_path(paths[0])) in capsys.readouterr().err  # where the finished folds are kept
    assert len(list(fold_store_path(paths[0]).glob("fold*.npz"))) == 3 and not out.exists()
    monkeypatch.setattr(cli, "_crossval_run", real_run)
    assert cli.main([*args, "--out", str(out), "--reframe-seed", "1", "--reframe-draws", "2"]) == 0
    summary = json.loads(out.read_text())
    assert summary["reframe"] == 2 and summary["reframe_seeds"] == [1, 2]
    assert summary["arguments"]["reframe_seed"] == 1 and summary["arguments"]["reframe_draws"] == 2
    draws = [json.loads(p.read_text()) for p in paths]
    assert [d["reframe_seed"] for d in draws] == [1, 2] and [d["file"] for d in summary["draws"]] == [p.name for p in paths]
    assert len(draws[0]["resumed_folds"]) == 3 and not draws[1].get("resumed_folds")  # draw 1 went on from its folds
    assert not any(fold_store_path(p).exists() for p in paths)  # removed once --out is written
    values = [d["balanced_accuracy"] for d in draws]
    assert [d["balanced_accuracy"] for d in summary["draws"]] == values
    assert summary["spread"]["balanced_accuracy"] == pytest.approx(
        {"n": 2, "mean": np.mean(values), "sd": np.std(values, ddof=1), "min": min(values), "max": max(values)})
    assert set(summary["spread"]) >= {"auc", "recall_anxious", "recall_neutral"}
    # the draws as one ensemble: each photo by its mean margin over the draws' fold thresholds
    tables = [read_predictions(cli.predictions_path(p)) for p in paths]
    ensemble = read_predictions(cli.predictions_path(out))
    margin = np.mean([(t["p_anxious"] - t["threshold"]).to_numpy() for t in tables], axis=0)  # the same photos
    assert summary["ensemble"]["n_images"] == 62 and summary["ensemble"]["n_draws"] == 2
    np.testing.assert_allclose(ensemble["margin_mean"], margin, rtol=1e-6)
    anxious, neutral = (ensemble["label"] == "anxious").to_numpy(), (ensemble["label"] == "neutral").to_numpy()
    assert summary["ensemble"]["balanced_accuracy"] == pytest.approx(
        ((margin[anxious] > 0).mean() + (margin[neutral] <= 0).mean()) / 2)
    other = ensemble["label"].isna().to_numpy()  # the binary task's other expressions, scored for false alarms
    assert other.sum() == 213 - 62 and summary["ensemble"]["false_alarm_other"] == pytest.approx((margin[other] > 0).mean())
    assert (ensemble["predicted"] == np.where(margin > 0, "anxious", "neutral")).all()
    from facekit.crossval import draws_ensemble

    one = draws_ensemble(tables[:1])[1]  # one draw: that run's own figures
    names = ("balanced_accuracy", "accuracy", "auc", "false_alarm_other")
    assert {k: one[k] for k in names} == pytest.approx({k: draws[0][k] for k in names})
    assert one["recall"] == pytest.approx(draws[0]["recall"])
    # a draw is the plain run of its seed: the same per-photo scores and arguments
    single = tmp_path / "seed2.json"
    assert cli.main([*args, "--out", str(single), "--reframe-seed", "2"]) == 0
    scores = [read_predictions(cli.predictions_path(p))["p_anxious"].to_numpy() for p in (paths[1], single)]
    np.testing.assert_array_equal(*scores)
    assert json.loads(single.read_text())["arguments"] == draws[1]["arguments"]
    capsys.readouterr()
    assert cli.main([*args[:-2], "--out", str(tmp_path / "x.json"), "--reframe-draws", "2"]) == 2  # no --reframe
    assert "give --reframe PX too" in capsys.readouterr().err
