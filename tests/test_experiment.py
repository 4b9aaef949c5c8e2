"""One split, trained on train people, chosen on val people, reported on test people (notebooks 03-04)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from facekit import synthetic
from facekit.checkpoint import load, normalization_meta, save
from facekit.crossval import Protocol, prepare
from facekit.experiment import (check_unseen, checkpoint_meta, compare, evaluate_on_split, fit_on_split,
                                people_digests, public, roles_for)
from facekit.index import shared_people
from facekit.model import ModelConfig
from facekit.train import TrainConfig

torch.set_num_threads(1)
threadpool_limits(1)  # BLAS threads fight on a shared machine

MC = ModelConfig(hidden=32, blocks=1)
TC = TrainConfig(epochs=5, batch_size=32)


@pytest.fixture(scope="module")
def dataset():
    """30 synthetic people with Training/Validation folders; photo 2 of each person relabelled happy."""
    table, landmarks = synthetic.make_dataset(n_people=30, photos_per_emotion=3, seed=1)
    table.loc[table["photo_id"] == 2, "emotion"] = "기쁨"
    return table, landmarks


@pytest.fixture(scope="module")
def split(dataset):
    return roles_for(dataset[0], seed=0)


@pytest.fixture(scope="module")
def data(dataset):
    return prepare(*dataset, Protocol(task="binary"))


def _people(table, mask) -> set:
    return set(table.loc[mask, "person"])


def test_roles_for_official_folders(dataset, split):
    table, _ = dataset
    role, info = split
    leaked = shared_people(table)
    assert leaked and info["people_in_both"] == len(leaked)
    test, train, val = role == "test", role == "train", role == "val"
    assert test.any() and train.any() and val.any()
    assert set(table.loc[test, "split"]) == {"Validation"}
    assert not _people(table, test) & leaked
    assert not _people(table, test) & _people(table, (table["split"] == "Training").to_numpy())
    assert not _people(table, train) & _people(table, val)
    assert info["test_people"] == len(_people(table, test)) and info["test_photos"] == test.sum()
    assert info["protocol"].startswith("official")


def test_roles_for_a_folder_is_a_random_person_split(dataset):
    table = dataset[0].assign(split="all")
    role, info = roles_for(table, seed=4)
    assert info["protocol"].startswith("random split by person")
    assert set(role) == {"train", "val", "test"}
    groups = {r: _people(table, role == r) for r in ("train", "val", "test")}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert len(groups["test"]) == info["test_people"] == 6  # 20% of 30 people
    assert sum(len(g) for g in groups.values()) == 30
    again, _ = roles_for(table, seed=4)
    assert np.array_equal(role, again)


@pytest.fixture(scope="module")
def fitted(data, split):
    role, _ = split
    return {kind: fit_on_split(data, role, kind, MC, TC) for kind in ("majority", "logreg", "resnet-mlp")}


@pytest.mark.parametrize("kind", ["majority", "logreg", "resnet-mlp"])
def test_evaluate_on_test_people(data, split, fitted, kind):
    role, info = split
    fit = fitted[kind]
    assert fit.kind == kind and fit.threshold == 0.5  # under 20 validation photos per class: the natural cut
    assert fit.val_report["n"] == (role[data.rows] == "val").sum()
    report = evaluate_on_split(data, role, fit, n_boot=100, seed=0)
    test = role[data.rows] == "test"
    assert report["n"] == test.sum() and report["n_test_people"] == len(set(data.groups[test]))
    np.testing.assert_array_equal(report["y"], data.y[test])
    assert report["prob"].shape == (test.sum(), 2)
    for key in ("accuracy", "balanced_accuracy", "auc"):
        assert 0 <= report[key] <= 1, key
    for key in ("balanced_accuracy_ci95", "accuracy_ci95", "auc_ci95"):
        lo, hi = report[key]
        assert 0 <= lo <= hi <= 1, key
    assert report["accuracy_ci95"] == list(evaluate_on_split(data, role, fit, n_boot=100, seed=0)["accuracy_ci95"])
    per = report["per_person"]
    assert {r["person"] for r in per} == set(data.groups[test])
    assert sum(r["photos"] for r in per) == report["n"]
    assert sum(r["correct"] for r in per) / report["n"] == pytest.approx(report["accuracy"])
    # the test people's happy photos: how often the detector calls them anxious
    other = role[data.rows_other] == "test"
    assert report["n_other_test"] == other.sum() > 0
    assert 0 <= report["false_alarm_other"] <= 1 and set(report["false_alarm_by_emotion"]) == {"happy"}
    if kind == "majority":
        expected = 1.0 if fit.selected["class"] == "anxious" else 0.0
        assert report["false_alarm_other"] == expected and report["balanced_accuracy"] == 0.5
    public_part = public(report)
    assert not {"prob", "y", "pred", "groups"} & set(public_part)
    json.dumps(public_part)


def test_resnet_trains_on_train_people_only(data, split):
    """With mirroring off, the model's standardisation is exactly the train people's statistics."""
    role, _ = split
    fit = fit_on_split(data, role, "resnet-mlp", MC, replace(TC, epochs=1, mirror=False))
    train = role[data.rows] == "train"
    np.testing.assert_allclose(fit.model.mean.numpy(), data.X[train].mean(0), atol=1e-5)
    assert 1 <= fit.selected["epoch"] <= 1 and len(fit.history) == 1 and "val_bal_acc" in fit.history[0]


def test_fitted_linear_path_on_a_split(data, split, fitted):
    """``linear_path="fitted"``: the linear path is the logreg baseline's model (same C, chosen on the val
    people); epoch 0 of the history is that linear model alone, and validation may keep it."""
    role, _ = split
    tc = replace(TC, epochs=2, mirror=False)
    fit = fit_on_split(data, role, "resnet-mlp", MC, tc, linear_path="fitted")
    assert fit.selected["linear_path"] == "fitted" and fit.selected["linear_C"] == fitted["logreg"].selected["C"]
    assert [r["epoch"] for r in fit.history] == [0, 1, 2] and 0 <= fit.selected["epoch"] <= 2
    assert fit.model.linear is not None and not fit.model.linear.weight.requires_grad
    epoch0 = fit_on_split(data, role, "resnet-mlp", MC, replace(tc, stop_epoch=0), linear_path="fitted")
    np.testing.assert_allclose(epoch0.predict(data.X)[:, 1], fitted["logreg"].predict(data.X)[:, 1], atol=0.02)
    with pytest.raises(ValueError, match="linear_path"):
        fit_on_split(data, role, "resnet-mlp", MC, tc, linear_path="frozen")


def test_check_unseen_refuses_a_checkpoint_that_saw_the_test_people(dataset, data, split, fitted):
    """Notebook 04 recomputes notebook 03's split: where they ran with other parameters, some of its test people
    trained the checkpoint, and its test numbers are refused instead of reported as of unseen people."""
    table, _ = dataset
    role, info = split
    meta = checkpoint_meta(data, table, role, info, fitted["resnet-mlp"], TC, source="synthetic")
    check_unseen(meta, table, role)  # the same split: nobody seen
    other = table.assign(split=None)  # the folders forgotten: a random split by person, with other test people
    other_role, _ = roles_for(other, seed=3)
    with pytest.raises(ValueError, match="test people of this split (trained|validated) the checkpoint") as err:
        check_unseen(meta, other, other_role)
    assert "Run notebook 03 again" in str(err.value)
    old = {**meta, "training_data": {k: v for k, v in meta["training_data"].items() if k != "people_seen"}}
    with pytest.warns(UserWarning, match="does not say which people"):
        check_unseen(old, table, role)


def test_unknown_kind(data, split):
    with pytest.raises(ValueError, match="unknown model kind"):
        fit_on_split(data, split[0], "svm")


def test_checkpoint_meta_round_trip(dataset, data, split, fitted, tmp_path):
    table, _ = dataset
    role, info = split
    fit = fitted["resnet-mlp"]
    meta = checkpoint_meta(data, table, role, info, fit, TC, source="synthetic")
    for key in ("task", "classes", "normalization", "features", "threshold", "training_data", "metrics"):
        assert key in meta, key
    assert meta["task"] == "binary" and meta["classes"] == ["neutral", "anxious"]
    assert meta["normalization"] == normalization_meta(data.protocol.normalization)
    assert meta["features"] == "xyz" and meta["threshold"] == fit.threshold
    train = role[data.rows] == "train"
    td = meta["training_data"]
    assert td["source"] == "synthetic" and td["label_policy"] == "uploader" and td["split"] == info
    assert td["train_photos"] == train.sum() == sum(td["per_class_train"].values())
    assert td["train_people"] == len(set(data.groups[train]))
    assert meta["metrics"]["validation"]["balanced_accuracy"] == fit.val_report["balanced_accuracy"]
    assert meta["metrics"]["selected"] == fit.selected and meta["train_config"]["epochs"] == TC.epochs
    json.dumps(meta)
    # whom it saw, as digests: this split's training and validation people, none of its test people
    assert td["people_seen"] == {r: people_digests(table.loc[role == r, "person"]) for r in ("train", "val")}
    assert len(td["people_seen"]["train"]) == info["train_people"] and str(table["person"][0]) not in json.dumps(td)
    # the checkpoint loads safely and predicts what the fitted model predicts
    path = save(tmp_path / "model.pt", fit.model, meta)
    predictor = load(path, expect={"task": "binary", "normalization": meta["normalization"], "features": "xyz"})
    landmarks = dataset[1][data.rows[:5]]
    widths = table.loc[data.rows[:5], "width"].to_numpy()
    heights = table.loc[data.rows[:5], "height"].to_numpy()
    # (the loaded model's CPU forward is the folded NumPy one: equal to float32 rounding)
    np.testing.assert_allclose(predictor.predict_landmarks(landmarks, widths, heights), fit.predict(data.X[:5]),
                               rtol=0, atol=1e-5)
    assert predictor.describe()["training_data"]["train_people"] == td["train_people"]


def test_compare_variants_on_one_split(dataset, split):
    table, landmarks = dataset
    role, _ = split
    out = compare(table, landmarks, role, {"majority": {"kind": "majority"},
                                          "logreg-seed": {"kind": "logreg",
                                                          "protocol": Protocol(normalization=replace(
                                                              Protocol().normalization, mode="seed", align=False))}},
                  n_boot=50, progress=False)
    assert list(out.index) == ["majority", "logreg-seed"]
    assert out.loc["majority", "balanced_accuracy"] == 0.5
    for col in ("accuracy", "balanced_accuracy", "bal_acc_ci95", "auc", "anxious_recall", "false_alarm_other"):
        assert col in out.columns
    test = role[prepare(table, landmarks, Protocol()).rows] == "test"
    assert out["test_photos"].tolist() == [int(test.sum())] * 2


def test_compare_says_on_how_many_test_photos_and_people(dataset, split):
    """The personal-neutral protocol scores no one with fewer than two neutral photos: its row says it was
    measured on fewer test photos and people than the plain one."""
    table, landmarks = dataset
    role, _ = split
    table = table.copy()
    plain = prepare(table, landmarks, Protocol())
    someone = sorted(set(plain.groups[role[plain.rows] == "test"]))[0]
    table.loc[(table["person"] == someone) & (table["photo_id"] == 0), "emotion"] = "슬픔"  # one neutral photo left
    out = compare(table, landmarks, role, {"plain": {"kind": "majority"},
                                          "personal": {"kind": "majority",
                                                       "protocol": Protocol(calibration="personal-neutral")}},
                  n_boot=20, progress=False)
    for name, protocol in (("plain", Protocol()), ("personal", Protocol(calibration="personal-neutral"))):
        data = prepare(table, landmarks, protocol)
        test = role[data.rows] == "test"
        assert out.loc[name, "test_photos"] == test.sum()
        assert out.loc[name, "test_people"] == len(set(data.groups[test]))
    assert out.loc["personal", "test_people"] == out.loc["plain", "test_people"] - 1
    assert out.loc["personal", "test_photos"] < out.loc["plain", "test_photos"]


def test_compare_in_worker_processes_gives_the_same_table(dataset, split):
    """``workers=2``: the variants train in two processes (one torch thread each here), finish in any order,
    and the table, rows in the order given, is the one-process table."""
    table, landmarks = dataset
    role, _ = split
    variants = {"MLP": {"model_config": MC, "train_config": TC},
                "MLP, no noise": {"model_config": MC, "train_config": replace(TC, noise_sigma=0.0)},
                "logreg": {"kind": "logreg"}}
    one = compare(table, landmarks, role, variants, n_boot=50, progress=False, workers=1)
    two = compare(table, landmarks, role, variants, n_boot=50, progress=False, workers=2)
    assert list(two.index) == list(variants)
    assert one.to_json() == two.to_json()


def test_compare_keeps_finished_variants_and_goes_on_from_them(dataset, split, tmp_path, monkeypatch):
    """``store``: each variant's row is kept as it finishes; the same call after an interrupted one trains only
    the variants it lacks and gives the uninterrupted table; another split is other work, so nothing is reused."""
    import facekit.experiment as experiment

    table, landmarks = dataset
    role, _ = split
    variants = {"MLP": {"model_config": MC, "train_config": TC},
                "logreg": {"kind": "logreg"}, "majority": {"kind": "majority"}}
    plain = compare(table, landmarks, role, variants, n_boot=50, progress=False)
    store = tmp_path / "variants"
    calls = []
    real = experiment._compare_one

    def stopped_after_one(name, *args):
        if calls:
            raise KeyboardInterrupt
        calls.append(name)
        return real(name, *args)

    monkeypatch.setattr(experiment, "_compare_one", stopped_after_one)
    with pytest.raises(KeyboardInterrupt):
        compare(table, landmarks, role, variants, n_boot=50, progress=False, store=store)
    assert calls == ["MLP"] and [f.name for f in store.iterdir()] == ["variant000.npz"]

    calls.clear()
    monkeypatch.setattr(experiment, "_compare_one", lambda name, *args: calls.append(name) or real(name, *args))
    # the photos now come from the landmark cache: that is not other work
    again = compare(table.assign(from_cache=True), landmarks, role, variants, n_boot=50, progress=False, store=store)
    assert calls == ["logreg", "majority"]
    assert again.to_json() == plain.to_json()

    calls.clear()
    other_role, _ = roles_for(table, seed=1)  # other validation people: other work
    assert (other_role != role).any()
    compare(table, landmarks, other_role, variants, n_boot=50, progress=False, store=store)
    assert calls == list(variants)


def test_anxious_vs_rest_on_a_split(dataset, split):
    """The rest holds neutral and happy photos; false alarms are counted on the happy ones."""
    role, _ = split
    data = prepare(*dataset, Protocol(task="anxious-vs-rest"))
    assert data.classes == ("rest", "anxious") and len(data.X_other) == 0
    fit = fit_on_split(data, role, "majority")
    report = evaluate_on_split(data, role, fit, n_boot=20)
    test = role[data.rows] == "test"
    assert report["n"] == test.sum()
    happy = test & (data.emotion == "기쁨")
    assert report["n_other_scored"] == happy.sum() > 0
    expected = 1.0 if fit.selected["class"] == "anxious" else 0.0
    assert report["false_alarm_other"] == expected
