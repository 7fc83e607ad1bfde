"""HOG of the grey aligned crop (scikit-image): a fixed, untrained appearance descriptor."""

from __future__ import annotations

import numpy as np
from skimage.feature import hog

from pipeline.learn.backends.base import BACKENDS, TrainingFrames


@BACKENDS.register("hog")
class HOGBackend:
    """9 orientations, cells of `input_size // 4` pixels, 2x2 blocks: 324 numbers at any crop size."""

    name = "hog"
    trained = False  # nothing learnt: nothing to cross-fit, and no class scores

    def __init__(self, input_size: int, **_: object) -> None:
        self.cell = max(4, input_size // 4)

    def fit(self, train: TrainingFrames, val: TrainingFrames, n_classes: int, seed: int) -> dict:
        return {"trained": False}

    def encode(self, frames: np.ndarray, ref: np.ndarray, logits: bool = False) -> np.ndarray:
        if logits:
            raise ValueError("features.encoding: hog has no class scores (it is not trained); use embedding")
        grey = frames.astype(np.float32).mean(axis=1)
        return np.stack(
            [
                hog(
                    g,
                    orientations=9,
                    pixels_per_cell=(self.cell, self.cell),
                    cells_per_block=(2, 2),
                    feature_vector=True,
                )
                for g in grey
            ]
        ).astype(np.float32)
