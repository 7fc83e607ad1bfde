"""A small CNN for per-frame spatial features, small enough to train on a CPU in seconds."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2))


class FrameCNN(nn.Module):
    """RGB crop (3 x S x S) -> feature vector (feature_dim) -> expression logits."""

    def __init__(self, n_classes: int, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(_block(3, 12), _block(12, 24), _block(24, 48), _block(48, feature_dim), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
