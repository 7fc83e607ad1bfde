"""What a feature backend is (fit on training frames, then encode one take at a time) and the registry of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.registry import Registry

PARAMS_KEY = "features.backends"


@dataclass(frozen=True)
class TrainingFrames:
    """Frames a backend may learn from, each with its take's reference (first found) frame.

    frames, refs: (N, 3, S, S) uint8; labels: (N,) int. Built from training takes only.
    """

    frames: np.ndarray
    refs: np.ndarray
    labels: np.ndarray


class Backend(Protocol):
    name: str
    trained: bool  # learns from the training frames (so it can be cross-fitted and has class scores)

    def fit(self, train: TrainingFrames, val: TrainingFrames, n_classes: int, seed: int) -> dict:
        """Learn from `train` (never from test subjects); returns a small report (e.g. val accuracy)."""
        ...

    def encode(self, frames: np.ndarray, ref: np.ndarray, logits: bool = False) -> np.ndarray:
        """(T, 3, S, S) uint8 frames and their reference frame (3, S, S), or one per frame (T, 3, S, S),
        -> (T, D) float32: the learnt features, or with `logits` the class scores (trained backends only)."""
        ...


# Backends by their params name; each backend module registers its own (the package's __init__ imports them).
BACKENDS: Registry[Callable[..., Backend]] = Registry("feature backend")
