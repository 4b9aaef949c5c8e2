"""Checkpoints: a round trip predicts the same, incompatible or foreign files fail with a clear message."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from facekit import synthetic
from facekit.checkpoint import CheckpointError, Predictor, features, load, normalization_meta, save
from facekit.model import ModelConfig
from facekit.normalize import NormalizeSettings, normalize
from facekit.train import TrainConfig, fit, predict_proba

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def faces():
    """(landmarks (N, 478, 3) pixel units, widths, heights, labels) for 4 synthetic people."""
    index = synthetic.make_index(n_people=4, photos_per_emotion=3, seed=2)
    lm, w, h = synthetic.render(index)
    y = (index["emotion"] == "불안").to_numpy().astype(int)
    return lm, w, h, y


def _trained(faces, settings: NormalizeSettings, kind: str):
    """A small model trained a few epochs (so BatchNorm statistics and standardisation are not defaults)."""
    lm, w, h, y = faces
    x = features(normalize(lm, settings, width=w, height=h), kind)
    mc = ModelConfig(n_features=x.shape[1], hidden=16, blocks=1)
    model, _ = fit(x, y, None, None, mc, TrainConfig(epochs=3, batch_size=8, seed=1))
    return model


def _meta(settings: NormalizeSettings, kind: str, **extra) -> dict:
    return {"task": "binary", "classes": ["neutral", "anxious"], "normalization": normalization_meta(settings),
            "features": kind, "threshold": 0.4, **extra}


@pytest.mark.parametrize("settings,kind", [(NormalizeSettings("kit", align=True), "xyz"),
                                           (NormalizeSettings("seed"), "xy")])
def test_round_trip_predicts_the_same(faces, tmp_path, settings, kind):
    lm, w, h, _ = faces
    model = _trained(faces, settings, kind)
    assert model.mean.abs().sum() > 0  # standardisation statistics were fitted, and must survive the trip
    path = save(tmp_path / "sub" / "model.pt", model, _meta(settings, kind))
    predictor = load(path)
    assert isinstance(predictor, Predictor)
    assert predictor.classes == ("neutral", "anxious") and predictor.threshold == 0.4
    assert predictor.feature_kind == kind and predictor.normalize_settings == settings
    assert torch.equal(predictor.model.mean, model.mean) and torch.equal(predictor.model.std, model.std)
    expected = predict_proba(model, features(normalize(lm, settings, width=w, height=h), kind))
    got = predictor.predict_landmarks(lm, w, h)
    assert got.shape == (len(lm), 2)
    # the loaded model answers through the folded NumPy forward on the CPU: float32 rounding apart, the same
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert not np.allclose(expected[:, 1], expected[0, 1])  # the model does tell faces apart
    one = predictor.predict_landmarks(lm[3], int(w[3]), int(h[3]))
    np.testing.assert_allclose(one, expected[3], rtol=0, atol=1e-5)
    described = predictor.describe()
    assert described["task"] == "binary" and described["model_config"]["hidden"] == 16


def test_save_requires_the_meta_keys(faces, tmp_path):
    settings = NormalizeSettings("kit", align=True)
    model = _trained(faces, settings, "xyz")
    meta = _meta(settings, "xyz")
    del meta["normalization"]
    with pytest.raises(ValueError, match="normalization"):
        save(tmp_path / "m.pt", model, meta)
    assert not (tmp_path / "m.pt").exists()


@pytest.fixture(scope="module")
def saved(faces, tmp_path_factory):
    settings = NormalizeSettings("kit", align=True)
    path = tmp_path_factory.mktemp("ckpt") / "binary.pt"
    return save(path, _trained(faces, settings, "xyz"), _meta(settings, "xyz"))


def test_expect_matching_loads(saved):
    p = load(saved, expect={"task": "binary", "normalization": {"mode": "kit", "align": True}, "features": "xyz"})
    assert p.task == "binary"


def test_incompatible_checkpoint_names_every_difference(saved):
    with pytest.raises(CheckpointError) as err:
        load(saved, expect={"task": "7class", "normalization": {"mode": "seed", "align": False}, "features": "xyz"})
    msg = str(err.value)
    assert str(saved) in msg
    assert "task: file 'binary', expected '7class'" in msg
    assert "normalization.mode: file 'kit', expected 'seed'" in msg
    assert "normalization.align: file True, expected False" in msg
    assert "features" not in msg  # only what differs


def test_save_writes_numpy_numbers_as_plain_ones_and_refuses_what_load_would(faces, tmp_path):
    """NumPy numbers in the meta (a threshold from np.quantile, counts from np.sum) are written as Python ones, so
    the file loads safely; meta that load() would refuse, or cannot read back at all, is not written."""
    settings = NormalizeSettings("kit", align=True)
    model = _trained(faces, settings, "xyz")
    meta = _meta(settings, "xyz", threshold=np.float64(0.4), metrics={"n": np.int64(7), "recall": np.array([0.5, 1])})
    predictor = load(save(tmp_path / "numpy.pt", model, meta))
    assert predictor.threshold == 0.4 and predictor.meta["metrics"] == {"n": 7, "recall": [0.5, 1.0]}
    assert type(predictor.meta["metrics"]["n"]) is int
    with pytest.raises(TypeError, match=r"meta\['metrics'\]\['when'\] is a PosixPath"):
        save(tmp_path / "bad.pt", model, {**meta, "metrics": {"when": tmp_path}})
    with pytest.raises(ValueError, match="calibration: file 'personal'"):
        save(tmp_path / "bad.pt", model, {**meta, "calibration": "personal"})
    assert not (tmp_path / "bad.pt").exists()
    # a file whose calibration this kit does not know is refused on load too, not read as the plain protocol
    blob = torch.load(tmp_path / "numpy.pt", weights_only=True)
    blob["meta"]["calibration"] = "personal"
    torch.save(blob, tmp_path / "typo.pt")
    with pytest.raises(CheckpointError, match="calibration: file 'personal'"):
        load(tmp_path / "typo.pt")


def test_other_normalisation_version_is_refused(faces, tmp_path):
    settings = NormalizeSettings("kit", align=True)
    meta = _meta(settings, "xyz")
    meta["normalization"] = {**meta["normalization"], "version": 99}
    path = save(tmp_path / "old.pt", _trained(faces, settings, "xyz"), meta)
    with pytest.raises(CheckpointError, match="normalization version: file 99"):
        load(path)


def test_weights_that_do_not_fit_the_config(saved, tmp_path):
    blob = torch.load(saved, weights_only=True)
    blob["meta"]["model_config"]["hidden"] = 32
    path = tmp_path / "mismatch.pt"
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="weights do not fit") as err:
        load(path)
    assert str(path) in str(err.value)


def test_plain_state_dict_is_not_a_facekit_checkpoint(tmp_path):
    path = tmp_path / "original_system.pth"
    torch.save({"w": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a facekit checkpoint") as err:
        load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"this is not a checkpoint", None])
def test_corrupt_file(saved, tmp_path, content):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content if content is not None else saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        load(path)
    assert str(path) in str(err.value)


class _RunsCode:
    """Unpickling this calls ``os.makedirs(marker)``: code that a safe loader must not run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_pickled_code_is_refused(saved, tmp_path):
    marker = tmp_path / "code-ran"
    blob = torch.load(saved, weights_only=True)
    blob["meta"]["evil"] = _RunsCode(str(marker))
    path = tmp_path / "evil.pt"
    torch.save(blob, path)
    with pytest.raises(CheckpointError) as err:
        load(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load(tmp_path / "nope.pt")


def test_personal_neutral_needs_a_reference(faces, tmp_path):
    lm, w, h, _ = faces
    settings = NormalizeSettings("kit", align=True)
    model = _trained(faces, settings, "xyz")
    path = save(tmp_path / "pn.pt", model, _meta(settings, "xyz", calibration="personal-neutral"))
    predictor = load(path)
    with pytest.raises(ValueError, match="reference"):
        predictor.predict_landmarks(lm[:2], w[:2], h[:2])
    shapes = normalize(lm[:4], settings)
    reference = shapes[0]
    got = predictor.predict_landmarks(lm[1:4], w[1:4], h[1:4], reference=reference)
    np.testing.assert_allclose(got, predict_proba(model, features(shapes[1:4] - reference)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("config", [ModelConfig(), ModelConfig(skip=False), ModelConfig(standardize=False, n_classes=7),
                                    ModelConfig(linear_skip=True), ModelConfig(linear_skip=True, standardize=False)],
                         ids=["default", "no-skip", "no-standardize-7class", "linear-path", "linear-path-no-standardize"])
def test_fused_forward_is_the_module_forward(config):
    """Predictor's CPU forward (folded standardisation and BatchNorm, NumPy) equals the torch module's."""
    from facekit.model import FusedMLP, ResNetMLP

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, config.n_features)).astype(np.float32)
    torch.manual_seed(0)
    model = ResNetMLP(config)
    model.set_standardization(torch.from_numpy(x * rng.uniform(0.5, 3, config.n_features).astype(np.float32)))
    for m in model.modules():  # running statistics and affine terms far from their initial 0/1
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.3, 3)
            m.weight.data.normal_()
            m.bias.data.normal_()
    if model.linear is not None:  # the linear path and the deep head start at zero: give them weights
        for layer in (model.linear, model.head):
            layer.weight.data.normal_(std=0.05)
            layer.bias.data.normal_()
    model.eval()
    np.testing.assert_allclose(FusedMLP(model).predict_proba(x), predict_proba(model, x), rtol=0, atol=1e-5)


def test_checkpoint_without_the_linear_path_field_loads_as_before(faces, tmp_path):
    """Checkpoints written before ``linear_skip`` existed have no such key: they load without the path."""
    settings = NormalizeSettings("kit", align=True)
    model = _trained(faces, settings, "xyz")
    path = save(tmp_path / "old.pt", model, _meta(settings, "xyz"))
    blob = torch.load(path, weights_only=True)
    del blob["meta"]["model_config"]["linear_skip"]
    torch.save(blob, path)
    predictor = load(path)
    assert predictor.model.linear is None and not predictor.model.config.linear_skip
    lm, w, h, _ = faces
    expected = predict_proba(model, features(normalize(lm, settings, width=w, height=h), "xyz"))
    np.testing.assert_allclose(predictor.predict_landmarks(lm, w, h), expected, rtol=0, atol=1e-5)


def test_linear_path_round_trip(faces, tmp_path):
    settings = NormalizeSettings("kit", align=True)
    lm, w, h, y = faces
    x = features(normalize(lm, settings, width=w, height=h), "xyz")
    mc = ModelConfig(n_features=x.shape[1], hidden=16, blocks=1, linear_skip=True)
    model, _ = fit(x, y, None, None, mc, TrainConfig(epochs=3, batch_size=8, seed=1))
    assert model.linear.weight.abs().sum() > 0
    predictor = load(save(tmp_path / "linear.pt", model, _meta(settings, "xyz")))
    assert predictor.model.config.linear_skip and predictor.model.linear is not None
    np.testing.assert_allclose(predictor.predict_landmarks(lm, w, h), predict_proba(model, x), rtol=0, atol=1e-5)

