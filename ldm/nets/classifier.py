"""Small CNN classifier: the evaluator network whose features and class probabilities feed the metrics."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ldm.nets.blocks import group_norm


class ConvClassifier(nn.Module):
    """conv blocks (GroupNorm, SiLU, stride-2) -> global average pool -> linear features -> class logits.

    `features` are the pre-activation outputs of the penultimate linear layer: no ReLU in front, so
    no dead units that would make the feature covariance of FID singular (docs/design.md, lessons).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, feature_dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), group_norm(w), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), group_norm(w), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), group_norm(2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), group_norm(2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), group_norm(4 * w), nn.SiLU(),
        )
        self.fc = nn.Linear(4 * w, feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(F.silu(f)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))
