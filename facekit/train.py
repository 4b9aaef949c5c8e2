"""Stage 6, **train**: fit the ResNet MLP with noise injection, early-stopped on validation people.

Everything is chosen on a validation split of *people* who are in neither the
training nor the test set: the epoch to keep (early stopping on validation
balanced accuracy), and the decision threshold (:mod:`facekit.evaluate`).

:class:`ResNetMLPClassifier` wraps it in scikit-learn conventions: ``fit(X, y,
groups=people)`` draws the validation people itself, ``fit`` returns ``self``,
learned attributes end in ``_``, ``random_state`` fixes everything.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
import torch
from torch import nn

from .model import ModelConfig, ResNetMLP
from .normalize import mirror_index


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    ``noise_sigma`` is the standard deviation of the Gaussian noise added to every
    landmark coordinate of every training sample, in the units of the features
    (``kit`` units: the face's centroid size is 1).  The original system used
    0.002 in its own units (largest nose-to-point distance = 1), which is about
    0.004–0.005 in kit units; the kit's default is that, rounded.
    ``mirror`` adds horizontally flipped copies of the training faces (landmark layouts only: the expression
    measures of a face and of its mirror image are the same, so with them it adds nothing).
    ``linear_C``: with a model that has the linear path (``ModelConfig.linear_skip``),
    fit that path first, alone, as the L2-regularised logistic regression with this
    inverse strength C (scikit-learn's, class-balanced like the training, on the same
    standardised and mirrored training faces), then freeze it: the deep part learns
    only what the linear model leaves.  Epoch 0 is then that linear model alone (the
    deep head starts at zero), and validation reports it, so early stopping can
    keep it.  ``None``: the linear path is trained with the rest.
    """

    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    noise_sigma: float = 0.005
    mirror: bool = True
    balance_classes: bool = True
    patience: int = 40
    stop_epoch: int | None = None  # stop here, on the schedule of ``epochs`` (an epoch count chosen on validation)
    linear_C: float | None = None
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` for the block, restored after (``None``: left as it is)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    recalls = [float((pred[y == c] == c).mean()) for c in range(n_classes) if (y == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def mirrorable(x: np.ndarray) -> bool:
    """Whether flipping the faces changes features ``x`` (N, F): landmark layouts (x, y[, z] per landmark) yes; the
    expression measures (:mod:`facekit.measures`, left and right averaged) are their own mirror image."""
    return x.shape[1] in (478 * 3, 478 * 2)


def _mirror_features(x: np.ndarray) -> np.ndarray:
    """Features of the horizontally flipped faces (layout x, y[, z] per landmark; the measures as they are)."""
    if not mirrorable(x):
        return np.array(x, copy=True)
    shape = x.reshape(len(x), 478, -1)[:, mirror_index(), :].copy()
    shape[..., 0] *= -1
    return shape.reshape(len(x), -1)


@torch.no_grad()
def fit_linear_path(model: ResNetMLP, x: np.ndarray, y: np.ndarray, C: float, balanced: bool = True) -> None:
    """Set ``model.linear`` to the L2 logistic regression of ``y`` on the model's standardised ``x``, and freeze it.

    x: (N, n_features) float32 training rows (the model's standardisation already fitted
    on them); y: (N,) class indices.  With two classes the logistic regression's one
    logit z goes to the second class's row (softmax over (0, z) is its sigmoid); with
    more, its multinomial logits go to their rows.  A class absent from ``y`` gets a
    logit far below the others, as no training face supports it.
    """
    from sklearn.linear_model import LogisticRegression

    if model.linear is None:
        raise ValueError("the model has no linear path: build it with ModelConfig(linear_skip=True)")
    xs = np.asarray(x, np.float64)
    if model.config.standardize:
        xs = (xs - model.mean.double().cpu().numpy()) / model.std.double().cpu().numpy()
    clf = LogisticRegression(C=C, max_iter=3000, class_weight="balanced" if balanced else None).fit(xs, y)
    n = model.config.n_classes
    w = np.zeros((n, xs.shape[1]))
    b = np.zeros(n)
    present = clf.classes_.astype(int)
    if len(present) == 2:
        w[present[1]], b[present[1]] = clf.coef_[0], clf.intercept_[0]
    elif len(present) > 2:
        w[present], b[present] = clf.coef_, clf.intercept_
    b[np.setdiff1d(np.arange(n), present)] = b[present].min() - 30.0
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        model.linear.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
    model.linear.requires_grad_(False)


@torch.no_grad()
def predict_proba(model: ResNetMLP, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities (N, n_classes) float32 for features (N, n_features)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(np.asarray(x[start:start + batch_size], dtype=np.float32), device=device)
        out.append(torch.softmax(model(xb), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.n_classes), np.float32)


def fit(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
        model_config: ModelConfig, config: TrainConfig = TrainConfig(),
        callback: Callable[[dict], None] | None = None, progress: bool = False,
        keep_val_proba: bool = False) -> tuple[ResNetMLP, list[dict]]:
    """Train; returns the model at its best validation epoch and the per-epoch history.

    x_*: (N, n_features) float32; y_*: (N,) int class indices.  Without validation
    rows the last epoch is kept (or ``config.stop_epoch``).  ``callback`` gets each
    epoch's history row (for live curves); ``keep_val_proba`` stores each epoch's
    validation probabilities in the history (``val_proba``), for choosing an epoch
    and a threshold across inner folds.  The same seed gives the same model on the
    same machine.
    """
    from tqdm.auto import tqdm

    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    x_train = np.asarray(x_train, np.float32)
    y_train = np.asarray(y_train, np.int64)
    if config.mirror and mirrorable(x_train):
        x_train = np.concatenate([x_train, _mirror_features(x_train)])
        y_train = np.concatenate([y_train, y_train])
    model = ResNetMLP(model_config).to(device)
    xt = torch.as_tensor(x_train, device=device)  # the data stays on the device: no loader overhead
    yt = torch.as_tensor(y_train, device=device)
    model.set_standardization(xt)
    fitted_linear = config.linear_C is not None and model.linear is not None
    if fitted_linear:
        fit_linear_path(model, x_train, y_train, config.linear_C, config.balance_classes)
    counts = np.bincount(y_train, minlength=model_config.n_classes).astype(np.float64)
    weight = None
    if config.balance_classes:
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / (counts > 0).sum(), 0.0)
        weight = torch.as_tensor(w, dtype=torch.float32, device=device)
    # Class weights multiply each *sample's* smoothed loss.  (Passing them to CrossEntropyLoss
    # together with label smoothing also weights the smoothing term of every sample by the rare
    # class's large weight, which on CK+ (25 fear vs 600 neutral) pushed every face towards fear.)
    per_sample = nn.CrossEntropyLoss(reduction="none", label_smoothing=config.label_smoothing)

    def loss_fn(logits, target):
        losses = per_sample(logits, target)
        if weight is None:
            return losses.mean()
        w = weight[target]
        return (losses * w).sum() / w.sum()

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                            weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(xt) / config.batch_size))
    total_steps = config.epochs * steps_per_epoch
    # OneCycleLR divides by zero when the warm-up is exactly one step (pct_start × total_steps == 1)
    pct_start = 0.1 if total_steps != 10 else 0.15
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps,
                                                pct_start=pct_start, anneal_strategy="cos")
    has_val = x_val is not None and len(x_val) > 0
    history: list[dict] = []
    best_key, best_state, best_epoch, since_best = None, None, 0, 0

    def validate(row: dict, epoch: int) -> None:
        nonlocal best_key, best_state, best_epoch, since_best
        prob = predict_proba(model, x_val)
        yv = np.asarray(y_val)
        row["val_loss"] = float(-np.log(np.clip(prob[np.arange(len(yv)), yv], 1e-7, 1)).mean())
        pred = prob.argmax(1)
        if keep_val_proba:
            row["val_proba"] = prob
        row["val_acc"] = float((pred == yv).mean())
        row["val_bal_acc"] = _balanced_accuracy(yv, pred, model_config.n_classes)
        key = (row["val_bal_acc"], -row["val_loss"])
        if best_key is None or key > best_key:
            best_key, best_epoch, since_best = key, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        row["best_epoch"] = best_epoch

    if fitted_linear:  # epoch 0: the fitted linear path alone (the deep head starts at zero)
        with torch.no_grad():
            model.eval()
            logits = model(xt)
            row = {"epoch": 0, "train_loss": float(loss_fn(logits, yt)),
                   "train_acc": float((logits.argmax(1) == yt).float().mean()), "lr": 0.0, "seconds": 0.0}
        if has_val:
            validate(row, 0)
        history.append(row)
        if callback:
            callback(row)
    n_epochs = config.epochs if config.stop_epoch is None else min(config.epochs, config.stop_epoch)
    bar = tqdm(range(n_epochs), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(xt), generator=gen).to(device)
        total, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            xb, yb = xt[idx], yt[idx]
            if config.noise_sigma > 0:
                xb = xb + torch.randn(xb.shape, generator=gen).to(device) * config.noise_sigma
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
        row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "train_acc": correct / max(seen, 1),
               "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
        if has_val:
            validate(row, epoch + 1)
            bar.set_postfix(val_bal_acc=f"{row['val_bal_acc']:.3f}", best=best_epoch)
        history.append(row)
        if callback:
            callback(row)
        if has_val and since_best >= config.patience and not keep_val_proba:
            break
    if best_state is not None and not keep_val_proba:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


class ResNetMLPClassifier:
    """scikit-learn-style wrapper: ``fit(X, y, groups=people)`` → self; ``predict_proba``; ``predict``.

    The validation people for early stopping are drawn from ``groups`` (a
    ``val_fraction`` of the people); without ``groups`` every epoch is kept.
    """

    def __init__(self, model_config: ModelConfig | None = None, train_config: TrainConfig = TrainConfig(),
                 val_fraction: float = 0.2, random_state: int = 0):
        self.model_config = model_config
        self.train_config = train_config
        self.val_fraction = val_fraction
        self.random_state = random_state

    def fit(self, X, y, groups=None, X_val=None, y_val=None, callback=None, progress=False):
        from .split import _draw_people

        X = np.asarray(X, np.float32)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        y_idx = np.searchsorted(self.classes_, y)
        if X_val is None and groups is not None and len(np.unique(groups)) >= 3:
            val = _draw_people(np.asarray(groups), self.val_fraction, self.random_state)
            X, X_val, y_idx, yv = X[~val], X[val], y_idx[~val], y_idx[val]
        else:
            yv = None if y_val is None else np.searchsorted(self.classes_, np.asarray(y_val))
        mc = self.model_config or ModelConfig()
        mc = replace(mc, n_features=X.shape[1], n_classes=len(self.classes_))
        tc = replace(self.train_config, seed=self.random_state)
        self.model_, self.history_ = fit(X, y_idx, X_val, yv, mc, tc, callback=callback, progress=progress)
        self.best_epoch_ = self.history_[-1].get("best_epoch", len(self.history_))
        return self

    def predict_proba(self, X) -> np.ndarray:
        return predict_proba(self.model_, np.asarray(X, np.float32))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]


def time_epoch(x: np.ndarray, y: np.ndarray, n_samples: int = 100_000, model_config: ModelConfig | None = None,
               config: TrainConfig = TrainConfig(), device: str = "auto") -> dict:
    """Seconds for one training epoch over ``n_samples`` rows (``x`` repeated to that many).

    Training cost does not depend on the values, only on the shapes, so repeating
    real rows measures the real thing.  Mirroring is off here so the count is exact.
    """
    reps = int(np.ceil(n_samples / len(x)))
    xs = np.tile(np.asarray(x, np.float32), (reps, 1))[:n_samples]
    ys = np.tile(np.asarray(y, np.int64), reps)[:n_samples]
    mc = model_config or ModelConfig(n_features=xs.shape[1], n_classes=int(ys.max()) + 1)
    cfg = replace(config, epochs=1, mirror=False, device=device)
    t0 = time.perf_counter()
    _, hist = fit(xs, ys, None, None, mc, cfg)
    seconds = time.perf_counter() - t0
    return {"samples": n_samples, "seconds_per_epoch": round(hist[0]["seconds"], 2),
            "samples_per_second": round(n_samples / hist[0]["seconds"]), "with_setup_seconds": round(seconds, 2),
            "device": str(pick_device(device)), "batch_size": cfg.batch_size, "threads": torch.get_num_threads()}
