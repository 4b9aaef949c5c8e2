"""Expression measures (``features="measures"``): what each one reads off a face, that a face and its mirror image
give the same, that size does not enter, and that they travel through crossval, checkpoints and the calibration."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facekit import measures as fm
from facekit import synthetic
from facekit.checkpoint import N_FEATURES, features, load, normalization_meta, save
from facekit.crossval import Protocol, crossval, prepare
from facekit.model import ModelConfig, ResNetMLP
from facekit.normalize import NormalizeSettings, canonical_face, mirror, mirror_index, normalize
from facekit.train import TrainConfig, fit

torch.set_num_threads(1)
NAMES = list(fm.MEASURES)


def _face(seed: int = 0) -> np.ndarray:
    """The canonical face with every landmark moved a little at random: no longer symmetric."""
    rng = np.random.default_rng(seed)
    return (canonical_face() + rng.normal(0, 0.01, (478, 3))).astype(np.float32)


def test_paired_points_are_the_ones_a_mirror_image_swaps():
    pairs = [fm.EYE_OUTER, fm.EYE_INNER, fm.IRIS, fm.BROW_INNER, fm.BROW_MID, fm.BROW_OUTER, fm.MOUTH_CORNER,
             fm.NOSTRIL, *zip(*fm.LID_UPPER), *zip(*fm.LID_LOWER)]
    m = mirror_index()
    assert all(m[right] == left and m[left] == right for right, left in pairs)
    midline = [fm.LIP_TOP, fm.LIP_UPPER_INNER, fm.LIP_LOWER_INNER, fm.LIP_BOTTOM, fm.NOSE_TIP, fm.SUBNASALE, fm.CHIN]
    assert all(m[i] == i for i in midline)


def test_a_face_and_its_mirror_image_give_the_same_measures():
    faces = np.stack([_face(s) for s in range(3)])
    np.testing.assert_allclose(fm.measures(mirror(faces)), fm.measures(faces), atol=1e-6)
    # … because left and right are averaged: one side alone differs between the two
    assert not np.allclose(faces[:, fm.BROW_INNER[0], 1], mirror(faces)[:, fm.BROW_INNER[0], 1], atol=1e-4)


def test_size_position_and_depth_do_not_enter():
    face = _face()[None]
    moved = face * 1.7 + np.array([0.3, -0.2, 5.0], np.float32)
    np.testing.assert_allclose(fm.measures(moved), fm.measures(face), rtol=1e-5)
    flat = face.copy()
    flat[..., 2] = 0
    np.testing.assert_allclose(fm.measures(flat), fm.measures(face), rtol=1e-6)


def _changed(move) -> dict:
    """The measures that change (name → new − old) when ``move`` edits a copy of the face."""
    face = _face()
    edited = face.copy()
    move(edited)
    diff = fm.measures(edited[None])[0] - fm.measures(face[None])[0]
    return {n: float(d) for n, d in zip(NAMES, diff) if abs(d) > 1e-6}


def test_each_action_moves_its_own_measures():
    scale = float(np.linalg.norm(_face()[fm.EYE_OUTER[0], :2] - _face()[fm.EYE_OUTER[1], :2]))

    def raise_inner_brows(f):  # AU1: up is −y
        f[list(fm.BROW_INNER), 1] -= 0.05

    assert _changed(raise_inner_brows) == {"brow_inner_height": pytest.approx(0.05 / scale, rel=1e-4)}

    def draw_brows_together(f):  # AU4
        f[fm.BROW_INNER[0], 0] += 0.05
        f[fm.BROW_INNER[1], 0] -= 0.05

    assert list(_changed(draw_brows_together)) == ["brow_gap"] and _changed(draw_brows_together)["brow_gap"] < 0

    def widen_eyes(f):  # AU5
        f[[i for side in fm.LID_UPPER for i in side], 1] -= 0.03

    assert set(_changed(widen_eyes)) == {"eye_opening", "lid_above_iris"}
    assert all(v > 0 for v in _changed(widen_eyes).values())

    def drop_jaw(f):  # AU26: the lower lip and chin go down
        f[[fm.LIP_LOWER_INNER, fm.LIP_BOTTOM, fm.CHIN], 1] += 0.1

    changed = _changed(drop_jaw)
    assert changed["mouth_opening"] > 0 and changed["jaw_drop"] > 0 and changed["corner_height"] > 0
    assert "mouth_width" not in changed and "brow_inner_height" not in changed

    def stretch_lips(f):  # AU20
        f[fm.MOUTH_CORNER[0], 0] -= 0.05
        f[fm.MOUTH_CORNER[1], 0] += 0.05

    assert list(_changed(stretch_lips)) == ["mouth_width"] and _changed(stretch_lips)["mouth_width"] > 0


def test_measures_need_whole_faces():
    with pytest.raises(ValueError, match=r"\(N, 478, 3\)"):
        fm.measures(np.zeros((2, 468, 3)))
    assert features(canonical_face()[None], "measures").shape == (1, N_FEATURES["measures"]) == (1, len(NAMES))


@pytest.fixture(scope="module")
def dataset():
    table, landmarks = synthetic.make_dataset(n_people=8, photos_per_emotion=4, seed=0)
    return table, landmarks


def test_crossval_on_measures(dataset):
    """The models get the 16 measures of each face; mirroring, which would add nothing, is not chosen or tried."""
    data = prepare(*dataset, Protocol(task="binary", features="measures"))
    shapes = normalize(dataset[1], NormalizeSettings("kit", align=True))
    np.testing.assert_allclose(data.X, fm.measures(shapes[data.rows]), rtol=1e-6)
    for model in ("logreg", "resnet-mlp"):
        kw = {"train_config": TrainConfig(epochs=4, batch_size=16)} if model == "resnet-mlp" else {}
        result = crossval(data, folds=4, model=model, inner_folds=2, progress=False, n_boot=20, **kw)
        assert result["protocol"]["features"] == "measures" and result["protocol"]["layouts"] == ["measures"]
        assert result["protocol"]["mirror"] == [False]
        if model == "resnet-mlp":  # the configs as the fold models were built: 16 inputs, not the template's 1434
            assert [c["n_features"] for c in result["protocol"]["model_config"]] == [16]
        assert all(f["mirror"] is False and f["layout"] == "measures"
                   for f in result["folds_detail"])
        # the synthetic fear faces raise brows, widen eyes and stretch lips, under person-to-person differences and
        # noise that keep the coordinates' models at 0.63 (logreg) and 0.61 here; the measures' gave 0.67 and 0.70
        assert result["balanced_accuracy"] > 0.6
    with pytest.raises(ValueError, match="mirror image"):
        crossval(data, folds=4, model="logreg", mirror="on", progress=False)


def test_personal_neutral_on_measures_is_the_measures_less_the_reference_faces(dataset, tmp_path):
    """Calibrated, a face's input is its measures less those of its reference (the mean of n − 1 of its person's
    n neutral faces), in cross-validation and in a checkpoint's Predictor alike."""
    table, landmarks = dataset
    data = prepare(table, landmarks, Protocol(task="binary", features="measures", calibration="personal-neutral"))
    shapes = normalize(landmarks, NormalizeSettings("kit", align=True))
    person = table["person"].to_numpy()
    neutral = (table["emotion"] == "중립").to_numpy()
    k = int(np.flatnonzero(data.y == 1)[0])
    row = data.rows[k]
    own, rest = (np.flatnonzero((person == person[row]) & m) for m in (neutral, ~neutral))
    reference = shapes[np.delete(own, list(rest).index(row) % len(own))].mean(axis=0)  # all but one, by turns
    expected = fm.measures(shapes[row][None])[0] - fm.measures(reference[None])[0]
    np.testing.assert_allclose(data.X[k], expected, atol=1e-5)
    assert np.abs(data.X[k]).max() < 1  # differences of measures, not measures of a difference

    mc = ModelConfig(n_features=data.X.shape[1], hidden=16, blocks=1)
    model, _ = fit(data.X, data.y, None, None, mc, TrainConfig(epochs=3, batch_size=8))
    meta = {"task": "binary", "classes": ["neutral", "anxious"], "features": "measures",
            "normalization": normalization_meta(NormalizeSettings("kit", align=True)), "calibration": "personal-neutral"}
    predictor = load(save(tmp_path / "m.pt", model, meta))
    from facekit.train import predict_proba

    np.testing.assert_allclose(predictor.predict_shapes(shapes[row][None], reference=reference)[0],
                               predict_proba(model, data.X[k:k + 1])[0], atol=1e-5)


def test_checkpoint_round_trip_on_measures(dataset, tmp_path):
    table, landmarks = dataset
    settings = NormalizeSettings("kit", align=True)
    x = features(normalize(landmarks, settings), "measures")
    y = (table["emotion"] == "불안").to_numpy().astype(int)
    model, _ = fit(x, y, None, None, ModelConfig(n_features=x.shape[1], hidden=16, blocks=1),
                   TrainConfig(epochs=3, batch_size=8))
    meta = {"task": "binary", "classes": ["neutral", "anxious"], "features": "measures",
            "normalization": normalization_meta(settings)}
    predictor = load(save(tmp_path / "m.pt", model, meta))
    from facekit.train import predict_proba

    np.testing.assert_allclose(predictor.predict_landmarks(landmarks[:5]), predict_proba(model, x[:5]), atol=1e-5)
    # a measures model's file that claims to take coordinates is not written, and where one was made anyway it is
    # refused, each naming the difference
    with pytest.raises(ValueError, match="feature layout: the model takes 16 numbers per face"):
        save(tmp_path / "wrong.pt", model, {**meta, "features": "xyz"})
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    blob["meta"]["features"] = "xyz"
    torch.save(blob, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="feature layout: the model takes 16 numbers per face"):
        load(tmp_path / "wrong.pt")


def test_training_does_not_add_mirror_images_of_measures(dataset):
    table, landmarks = dataset
    x = features(normalize(landmarks, NormalizeSettings("kit", align=True)), "measures")
    y = (table["emotion"] == "불안").to_numpy().astype(int)
    mc = ModelConfig(n_features=x.shape[1], hidden=8, blocks=1)
    a, _ = fit(x, y, None, None, mc, TrainConfig(epochs=2, batch_size=8, mirror=True, seed=3))
    b, _ = fit(x, y, None, None, mc, TrainConfig(epochs=2, batch_size=8, mirror=False, seed=3))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_cli_crossval_on_jaffe_measures(jaffe_root, tmp_path, capsys):
    from facekit import cli

    out = tmp_path / "measures.json"
    assert cli.main(["crossval", str(jaffe_root), "--features", "measures", "--model", "logreg", "--folds", "3",
                     "--inner-folds", "2", "--workers", "1", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"]["features"] == "measures" and result["n_images"] == 62 and result["n_people"] == 10
    assert 0 <= result["balanced_accuracy"] <= 1 and result["protocol"]["mirror"] == [False]
    people = [set(f["test_people"]) for f in result["folds_detail"]]
    assert sum(map(len, people)) == 10 and set.union(*people) == {p["person"] for p in result["per_person"]}
    assert "logreg on the expression measures, binary, folds 3: balanced accuracy" in capsys.readouterr().out
    refused = tmp_path / "refused.json"
    assert cli.main(["crossval", str(jaffe_root), "--features", "measures", "--mirror", "on", "--out", str(refused)]) == 2
    assert "leave --mirror out" in capsys.readouterr().err and not refused.exists()
    for unaligned in (["--no-align"], ["--normalization", "seed"]):
        assert cli.main(["crossval", str(jaffe_root), "--features", "measures", *unaligned, "--out", str(refused)]) == 2
        assert "aligned face" in capsys.readouterr().err and not refused.exists()


@pytest.mark.parametrize("settings", [NormalizeSettings("kit", align=False), NormalizeSettings("seed")],
                         ids=["kit-unaligned", "seed"])
def test_measures_need_the_aligned_face(dataset, settings, tmp_path):
    """The measures are heights and widths in the aligned face's frame: a protocol or a checkpoint that would take
    them from unaligned (or seed-mode) faces is refused, saying what to use."""
    table, landmarks = dataset
    with pytest.raises(ValueError, match="kit normalisation with alignment"):
        Protocol(features="measures", normalization=settings)
    model = ResNetMLP(ModelConfig(n_features=16, hidden=8, blocks=1))
    meta = {"task": "binary", "classes": ["neutral", "anxious"], "features": "measures",
            "normalization": normalization_meta(settings)}
    with pytest.raises(ValueError, match="kit normalisation with alignment"):
        save(tmp_path / "m.pt", model, meta)
    assert not (tmp_path / "m.pt").exists()
    Protocol(features="xyz", normalization=settings)  # the coordinates may be taken either way
