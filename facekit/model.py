"""The classifier: a ResNet-style MLP on normalised landmarks.

    x (N, 1434) ─ standardise (training people's mean/std, kept inside the model)
                ─ Linear → hidden width
                ─ residual block × n:  h + Dropout(GELU(BN(Linear(Dropout(GELU(BN(Linear(h))))))))
                ─ LayerNorm-free head: Linear → classes
                [+ Linear(standardised x) → classes, with ``linear_skip=True``]

Every switch the ablations need is a field of :class:`ModelConfig`
(``skip=False`` removes the skip connections, the linear path included,
``standardize=False`` the input standardisation).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    n_features: int = 478 * 3
    n_classes: int = 2
    hidden: int = 256
    blocks: int = 2
    dropout: float = 0.3
    skip: bool = True
    standardize: bool = True
    # A linear path from the standardised input to the logits ("wide & deep"): a skip connection
    # spanning the whole network.  It and the deep head start at zero, so training starts where
    # logistic regression's solver does and the deep part adds to a linear fit.  False keeps
    # checkpoints written before the field existed loading unchanged.
    linear_skip: bool = False

    @property
    def has_linear_path(self) -> bool:
        """``skip=False`` (the "no skip connections" ablation) removes the linear path too."""
        return self.linear_skip and self.skip

    def to_dict(self) -> dict:
        return asdict(self)


class ResidualBlock(nn.Module):
    """Linear–BatchNorm–GELU–Dropout, twice, plus the skip connection (unless ``skip=False``)."""

    def __init__(self, width: int, dropout: float, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.body = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.GELU(), nn.Dropout(dropout))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h) if self.skip else self.body(h)


class ResNetMLP(nn.Module):
    """x: (N, n_features) float32 normalised landmarks → logits (N, n_classes)."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(config.n_features))
        self.register_buffer("std", torch.ones(config.n_features))
        self.proj = nn.Sequential(nn.Linear(config.n_features, config.hidden), nn.BatchNorm1d(config.hidden),
                                  nn.GELU(), nn.Dropout(config.dropout))
        self.blocks = nn.Sequential(*[ResidualBlock(config.hidden, config.dropout, config.skip)
                                      for _ in range(config.blocks)])
        self.head = nn.Linear(config.hidden, config.n_classes)
        self.linear = None
        if config.has_linear_path:
            self.linear = nn.Linear(config.n_features, config.n_classes)
            for layer in (self.linear, self.head):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def set_standardization(self, x: torch.Tensor) -> None:
        """Fit the input standardisation on training rows (training people only).

        Constant features (the nose tip is the origin of every normalised face) keep a
        scale of 1, as scikit-learn's StandardScaler does: dividing by a tiny std would
        blow the training noise on them up by orders of magnitude.
        """
        if self.config.standardize:
            std = x.std(0)
            self.mean.copy_(x.mean(0))
            self.std.copy_(torch.where(std < 1e-4, torch.ones_like(std), std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.standardize:
            x = (x - self.mean) / self.std
        out = self.head(self.blocks(self.proj(x)))
        return out if self.linear is None else out + self.linear(x)


class FusedMLP:
    """A trained :class:`ResNetMLP`'s evaluation-mode forward in NumPy, for one face at a time.

    The live path scores one face per frame, where PyTorch's per-operator dispatch
    (about 15 operators) costs more than the arithmetic.  Here the input
    standardisation is folded into the first Linear layer and every BatchNorm (with
    its running statistics) into the Linear layer before it, so a forward is four
    or six matrix products and GELUs (plus one for the linear path, with the
    standardisation folded in the same way): the same function, to float32 rounding
    (``tests/test_checkpoint.py`` checks it against the module).  Dropout is the
    identity in evaluation.  The weights are copied at construction: build a new
    one after further training.
    """

    def __init__(self, model: ResNetMLP):
        from scipy.special import ndtr

        self._ndtr = ndtr  # the standard normal CDF Φ, float32 in and out
        self.config = model.config
        with torch.no_grad():
            mean = model.mean.double().cpu().numpy()
            std = model.std.double().cpu().numpy()
            def standardized(w, b):  # ((x − mean) / std) @ wᵀ + b  ==  x @ (w / std)ᵀ + (b − (w / std) @ mean)
                if self.config.standardize:
                    w = w / std[None, :]
                    b = b - w @ mean
                return np.ascontiguousarray(w.T, np.float32), b.astype(np.float32)

            self.proj = standardized(*self._fold(model.proj[0], model.proj[1]))
            self.linear = None
            if model.linear is not None:
                self.linear = standardized(model.linear.weight.double().cpu().numpy(),
                                           model.linear.bias.double().cpu().numpy())
            self.blocks = []
            for block in model.blocks:
                lin1, bn1, _, _, lin2, bn2, _, _ = block.body
                self.blocks.append(tuple((np.ascontiguousarray(w.T, np.float32), b.astype(np.float32))
                                         for w, b in (self._fold(lin1, bn1), self._fold(lin2, bn2))))
            self.head = (np.ascontiguousarray(model.head.weight.double().cpu().numpy().T, np.float32),
                         model.head.bias.double().cpu().numpy().astype(np.float32))

    @staticmethod
    def _fold(linear: nn.Linear, bn: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
        """Linear followed by evaluation-mode BatchNorm → one affine map (weight (out, in), bias (out,)), float64."""
        w = linear.weight.double().cpu().numpy()
        b = linear.bias.double().cpu().numpy()
        scale = bn.weight.double().cpu().numpy() / np.sqrt(bn.running_var.double().cpu().numpy() + bn.eps)
        shift = bn.bias.double().cpu().numpy() - bn.running_mean.double().cpu().numpy() * scale
        return w * scale[:, None], b * scale + shift

    def _gelu(self, z: np.ndarray) -> np.ndarray:
        # GELU(z) = z·Φ(z), PyTorch's exact GELU: two NumPy calls instead of five (0.5·z·(1 + erf(z/√2)));
        # right after FaceMesh every call costs ~10 µs of cold caches, so the count is what matters.
        return z * self._ndtr(z)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x: (N, n_features) float32 → logits (N, n_classes) float32."""
        x = np.asarray(x, np.float32)
        h = self._gelu(x @ self.proj[0] + self.proj[1])
        for (w1, b1), (w2, b2) in self.blocks:
            body = self._gelu(self._gelu(h @ w1 + b1) @ w2 + b2)
            h = h + body if self.config.skip else body
        out = h @ self.head[0] + self.head[1]
        return out if self.linear is None else out + (x @ self.linear[0] + self.linear[1])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax of :meth:`logits`, (N, n_classes) float32."""
        z = self.logits(x)  # float32, a fresh array: changed in place
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z
