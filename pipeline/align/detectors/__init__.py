"""Detector backends, one module each, chosen by name in params.yaml (`align.detector`).

`DETECTORS` is the one list of detector names: params validation, the stage's first check and
`make_detector` all ask it. The factories import their backend lazily, so a stage that uses
MTCNN never imports onnxruntime (and its code hash covers only the detector it runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.align.detectors.base import Detection, FaceDetector
from pipeline.registry import Registry

PARAM_KEY = "align.detector"
DETECTORS: Registry[Callable[..., FaceDetector]] = Registry("detector")


@DETECTORS.register("mtcnn")
def _mtcnn(**kwargs: Any) -> FaceDetector:
    from pipeline.align.detectors.mtcnn import MTCNN

    return MTCNN(**kwargs)


@DETECTORS.register("insightface")
def _insightface(**kwargs: Any) -> FaceDetector:
    from pipeline.align.detectors.insightface import InsightFaceDetector

    return InsightFaceDetector(**kwargs)


def make_detector(name: str, **kwargs: Any) -> FaceDetector:
    """Build a detector by its params name; an unknown name is a one-line error listing the known ones."""
    detector: FaceDetector = DETECTORS.create(name, key=PARAM_KEY, **kwargs)
    return detector


__all__ = ["DETECTORS", "PARAM_KEY", "Detection", "FaceDetector", "make_detector"]
