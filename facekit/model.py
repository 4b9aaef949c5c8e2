"""The classifier: a ResNet-style MLP on normalised landmarks.

    x (N, 1434) ─ standardise (training people's mean/std, kept inside the model)
                ─ Linear → hidden width
                ─ residual block × n:  h + Dropout(GELU(BN(Linear(Dropout(GELU(BN(Linear(h))))))))
                ─ LayerNorm-free head: Linear → classes

Every switch the ablations need is a field of :class:`ModelConfig`
(``skip=False`` removes the skip connections, ``standardize=False`` the input
standardisation).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

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
        return self.head(self.blocks(self.proj(x)))
