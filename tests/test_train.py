"""Training: deterministic for a seed, standardisation from training rows only, the ablation switches,
early stopping on validation, the scikit-learn-style classifier, the epoch timer."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from facekit import synthetic
from facekit.checkpoint import features
from facekit.model import ModelConfig, ResidualBlock, ResNetMLP
from facekit.normalize import NormalizeSettings, normalize
from facekit.train import ResNetMLPClassifier, TrainConfig, fit, predict_proba, time_epoch

torch.set_num_threads(1)

SMALL = ModelConfig(hidden=32, blocks=1)
FAST = TrainConfig(epochs=3, batch_size=32)


@pytest.fixture(scope="module")
def toy():
    """A separable toy problem from synthetic people: neutral faces, and the same people's neutral faces
    moved by the fear movements (brows, lids, lips).  Returns (X (N, 1434), y (N,), person (N,))."""
    index = synthetic.make_index(n_people=24, photos_per_emotion=4, seed=5)
    index = index[index["emotion"] == "중립"].reset_index(drop=True)
    lm, _, _ = synthetic.render(index)
    shapes = normalize(lm, NormalizeSettings("kit", align=True)).astype(np.float64)
    fields = synthetic.expression_fields()
    y = np.tile([0, 1], len(shapes) // 2)
    shapes[y == 1] += 2.0 * (fields["brows"] + fields["lids"] + fields["lips"])
    return features(shapes), y, index["person"].to_numpy()


@pytest.fixture(scope="module")
def parts(toy):
    """(x_train, y_train, x_val, y_val): 18 training people, 6 validation people."""
    x, y, g = toy
    val = np.isin(g, np.unique(g)[:6])
    return x[~val], y[~val], x[val], y[val]


def _mc(x, base: ModelConfig = SMALL) -> ModelConfig:
    return replace(base, n_features=x.shape[1], n_classes=2)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _without_times(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_same_seed_same_model(parts):
    xt, yt, xv, yv = parts
    m1, h1 = fit(xt, yt, xv, yv, _mc(xt), FAST)
    m2, h2 = fit(xt, yt, xv, yv, _mc(xt), FAST)
    assert _same_weights(m1, m2)
    assert _without_times(h1) == _without_times(h2)
    m3, h3 = fit(xt, yt, xv, yv, _mc(xt), replace(FAST, seed=1))
    assert not _same_weights(m1, m3)
    assert [r["train_loss"] for r in h1] != [r["train_loss"] for r in h3]


def test_standardisation_from_training_rows_only(parts):
    xt, yt, xv, yv = parts
    cfg = replace(FAST, epochs=1, mirror=False)
    model, _ = fit(xt, yt, xv, yv, _mc(xt), cfg)
    np.testing.assert_allclose(model.mean.numpy(), xt.mean(0), atol=1e-5)
    sd = xt.std(0, ddof=1)
    np.testing.assert_allclose(model.std.numpy(), np.where(sd < 1e-4, 1.0, sd), rtol=1e-4, atol=1e-6)
    # the nose tip is 0 in every face: its features keep scale 1, so training noise on them stays small
    assert (model.std.numpy()[sd < 1e-4] == 1.0).all() and (sd < 1e-4).sum() >= 3
    other, _ = fit(xt, yt, xv * 3 + 100, yv, _mc(xt), cfg)
    assert torch.equal(model.mean, other.mean) and torch.equal(model.std, other.std)


def test_residual_block_skip_switch():
    torch.manual_seed(0)
    h = torch.randn(8, 16)
    for skip in (True, False):
        block = ResidualBlock(16, dropout=0.0, skip=skip).eval()
        body = block.body(h)
        torch.testing.assert_close(block(h), h + body if skip else body)


@pytest.mark.parametrize("switch", [{"skip": False}, {"standardize": False}])
def test_ablations_build_and_train(parts, switch):
    xt, yt, xv, yv = parts
    mc = _mc(xt, replace(SMALL, **switch))
    model, history = fit(xt, yt, xv, yv, mc, FAST)
    assert len(history) == FAST.epochs
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in history)
    prob = predict_proba(model, xv)
    assert prob.shape == (len(xv), 2) and np.isfinite(prob).all()
    if switch.get("skip") is False:
        assert all(not b.skip for b in model.blocks)
    if switch.get("standardize") is False:
        assert torch.equal(model.mean, torch.zeros_like(model.mean)) and torch.equal(model.std, torch.ones_like(model.std))
        model.mean.fill_(5.0)  # ignored without standardisation
        np.testing.assert_array_equal(predict_proba(model, xv), prob)


def test_linear_path_starts_at_zero_and_skip_false_removes_it(parts):
    xt, yt, xv, yv = parts
    model = ResNetMLP(_mc(xt, replace(SMALL, linear_skip=True))).eval()
    assert model.linear is not None
    assert torch.equal(model(torch.as_tensor(xv, dtype=torch.float32)), torch.zeros(len(xv), 2))  # starts at logits 0
    assert ResNetMLP(_mc(xt, replace(SMALL, linear_skip=True, skip=False))).linear is None  # the "no skip" ablation
    assert ResNetMLP(_mc(xt)).linear is None  # off by default: older checkpoints load unchanged
    trained, history = fit(xt, yt, xv, yv, _mc(xt, replace(SMALL, linear_skip=True)), replace(FAST, epochs=6))
    # the logits are the linear path's plus the deep head's
    x = torch.as_tensor(xv, dtype=torch.float32)
    with torch.no_grad():
        xs = (x - trained.mean) / trained.std
        torch.testing.assert_close(trained(x), trained.head(trained.blocks(trained.proj(xs))) + trained.linear(xs))
    assert trained.linear.weight.abs().sum() > 0 and trained.head.weight.abs().sum() > 0
    assert balanced_accuracy_score(yv, predict_proba(trained, xv).argmax(1)) > 0.5


def test_fitted_linear_path_is_the_logistic_regression_then_frozen(parts):
    """``linear_C``: epoch 0 is scikit-learn's logistic regression on the model's standardised rows (the deep
    head starts at zero); later epochs train the deep part only and leave the linear path as it was."""
    from sklearn.linear_model import LogisticRegression

    xt, yt, xv, yv = parts
    mc = _mc(xt, replace(SMALL, linear_skip=True))
    cfg = replace(FAST, epochs=5, linear_C=0.1, mirror=False)
    zero, history0 = fit(xt, yt, xv, yv, mc, replace(cfg, stop_epoch=0))
    assert [r["epoch"] for r in history0] == [0] and history0[0]["best_epoch"] == 0
    mean, std = zero.mean.double().numpy(), zero.std.double().numpy()
    lr = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit((xt - mean) / std, yt)
    np.testing.assert_allclose(predict_proba(zero, xv)[:, 1], lr.predict_proba((xv - mean) / std)[:, 1], atol=1e-5)
    trained, history = fit(xt, yt, xv, yv, mc, cfg, keep_val_proba=True)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(history[0]["val_proba"], predict_proba(zero, xv))
    assert torch.equal(trained.linear.weight, zero.linear.weight) and torch.equal(trained.linear.bias, zero.linear.bias)
    assert not trained.linear.weight.requires_grad
    assert trained.head.weight.abs().sum() > 0  # the deep part did learn
    # without a linear path there is nothing to fit: the setting is ignored, no epoch 0
    _, plain = fit(xt, yt, xv, yv, _mc(xt), cfg)
    assert [r["epoch"] for r in plain] == [1, 2, 3, 4, 5]


def test_standardisation_is_applied_when_on():
    model = ResNetMLP(ModelConfig(n_features=10, hidden=8, blocks=1)).eval()
    x = torch.randn(4, 10)
    before = model(x)
    model.mean.fill_(5.0)
    assert not torch.allclose(model(x), before)


def test_noise_changes_the_result(parts):
    xt, yt, _, _ = parts
    a, _ = fit(xt, yt, None, None, _mc(xt), replace(FAST, noise_sigma=0.0))
    b, _ = fit(xt, yt, None, None, _mc(xt), replace(FAST, noise_sigma=0.05))
    assert not _same_weights(a, b)


def test_stop_epoch_on_the_schedule_of_epochs(parts):
    xt, yt, _, _ = parts
    full_cfg = replace(FAST, epochs=6)
    _, full = fit(xt, yt, None, None, _mc(xt), full_cfg)
    _, short = fit(xt, yt, None, None, _mc(xt), replace(full_cfg, stop_epoch=2))
    assert len(full) == 6 and len(short) == 2
    # same learning rates and losses as the first epochs of the full schedule (not a 2-epoch schedule)
    assert _without_times(short) == _without_times(full[:2])
    _, two = fit(xt, yt, None, None, _mc(xt), replace(full_cfg, epochs=2))
    assert [r["lr"] for r in two] != [r["lr"] for r in short]


def test_early_stopping_restores_the_best_validation_epoch(parts):
    """With validation labels that carry no signal, validation peaks early; the model returned is
    the one of the best epoch, not the last."""
    xt, yt, xv, yv = parts
    noise_labels = np.random.default_rng(0).permutation(yv)
    cfg = replace(FAST, epochs=40, patience=3)
    rows = []
    model, history = fit(xt, yt, xv, noise_labels, _mc(xt), cfg, callback=rows.append)
    assert rows == history
    assert len(history) < 40, "early stopping should have ended training"
    best = history[-1]["best_epoch"]
    keys = [(r["val_bal_acc"], -r["val_loss"]) for r in history]
    assert best == keys.index(max(keys)) + 1
    assert best <= len(history) - cfg.patience
    prob = predict_proba(model, xv)
    val_loss = float(-np.log(np.clip(prob[np.arange(len(xv)), noise_labels], 1e-7, 1)).mean())
    assert val_loss == pytest.approx(history[best - 1]["val_loss"], abs=1e-6)
    assert balanced_accuracy_score(noise_labels, prob.argmax(1)) == pytest.approx(history[best - 1]["val_bal_acc"])


def test_classifier_follows_sklearn_conventions_and_learns(toy):
    x, y, g = toy
    names = np.array(["neutral", "anxious"])[y]
    test = np.isin(g, np.unique(g)[-6:])
    clf = ResNetMLPClassifier(SMALL, replace(FAST, epochs=12), random_state=0)
    assert clf.fit(x[~test], names[~test], groups=g[~test]) is clf
    assert list(clf.classes_) == ["anxious", "neutral"]
    assert isinstance(clf.history_, list) and len(clf.history_) >= 1 and "val_bal_acc" in clf.history_[0]
    assert 1 <= clf.best_epoch_ <= len(clf.history_)
    prob = clf.predict_proba(x[test])
    assert prob.shape == (test.sum(), 2)
    np.testing.assert_allclose(prob.sum(1), 1, atol=1e-5)
    pred = clf.predict(x[test])
    assert pred.shape == (test.sum(),) and set(pred) <= {"anxious", "neutral"}
    np.testing.assert_array_equal(pred, clf.classes_[prob.argmax(1)])
    assert balanced_accuracy_score(names[test], pred) >= 0.85  # held-out people; chance is 0.5
    again = ResNetMLPClassifier(SMALL, replace(FAST, epochs=12), random_state=0).fit(x[~test], names[~test],
                                                                                     groups=g[~test])
    np.testing.assert_array_equal(again.predict_proba(x[test]), prob)


def test_classifier_without_groups_keeps_every_epoch(parts):
    xt, yt, _, _ = parts
    clf = ResNetMLPClassifier(SMALL, FAST).fit(xt, yt)
    assert len(clf.history_) == FAST.epochs and "val_bal_acc" not in clf.history_[-1]
    assert clf.best_epoch_ == FAST.epochs
    assert list(clf.classes_) == [0, 1]


def test_time_epoch(parts):
    xt, yt, _, _ = parts
    out = time_epoch(xt, yt, n_samples=2000, config=replace(FAST, batch_size=64), device="cpu")
    assert out["samples"] == 2000 and out["device"] == "cpu" and out["batch_size"] == 64
    for key in ("seconds_per_epoch", "samples_per_second", "with_setup_seconds"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    assert out["with_setup_seconds"] >= out["seconds_per_epoch"]
    assert out["threads"] >= 1


def test_class_weights_do_not_push_every_face_to_the_rare_class():
    """24:1 imbalance with label smoothing: the majority class must still be learned.

    (Regression: class weights passed to CrossEntropyLoss together with label smoothing also
    weighted the smoothing term, and every CK+ face came out 'fear'.)"""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 20)).astype(np.float32)
    y = (x[:, 0] > 1.75).astype(np.int64)  # about 4% positives
    assert 0.02 < y.mean() < 0.08
    model, _ = fit(x, y, None, None, ModelConfig(n_features=20, n_classes=2, hidden=32),
                   TrainConfig(epochs=60, mirror=False, noise_sigma=0.0, label_smoothing=0.1, seed=0))
    pred = predict_proba(model, x).argmax(1)
    assert (pred[y == 0] == 0).mean() > 0.9 and (pred[y == 1] == 1).mean() > 0.6
