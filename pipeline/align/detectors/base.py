"""The small interface every detector backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One face: box (x1, y1, x2, y2), confidence, and 5 points in image pixels.

    Point order follows the ArcFace template: left eye, right eye, nose tip, left mouth corner,
    right mouth corner, where left/right are as seen in the image.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Face size in pixels: the mean of box width and height."""
        return float(((self.box[2] - self.box[0]) + (self.box[3] - self.box[1])) / 2)


class FaceDetector(Protocol):
    name: str

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        """All faces in one H x W x 3 uint8 RGB image, best score first."""
        ...
