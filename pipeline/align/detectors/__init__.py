"""Detector backends, one module each, chosen by name in params.yaml."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.align.detectors.base import Detection, FaceDetector


def _mtcnn(**kwargs: Any) -> FaceDetector:
    from pipeline.align.detectors.mtcnn import MTCNN

    return MTCNN(**kwargs)


def _insightface(**kwargs: Any) -> FaceDetector:
    from pipeline.align.detectors.insightface import InsightFaceDetector

    return InsightFaceDetector(**kwargs)


REGISTRY: dict[str, Callable[..., FaceDetector]] = {"mtcnn": _mtcnn, "insightface": _insightface}


def make_detector(name: str, **kwargs: Any) -> FaceDetector:
    """Build a detector by its params name; an unknown name lists the known ones."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return factory(**kwargs)


__all__ = ["Detection", "FaceDetector", "REGISTRY", "make_detector"]
