"""SCRFD face detector from an insightface model pack on disk, run with onnxruntime.

Packs (e.g. `buffalo_l`, with `det_10g.onnx`) are licensed for non-commercial research only and
do not ship with any package: point `align.insightface_pack` (or $MVFER_INSIGHTFACE_PACK) at an
unpacked pack directory or a detector `.onnx` file. Nothing is ever downloaded: a missing or broken
pack is a one-line `InsightFacePackError` naming the path and the fix.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from pipeline.align.detectors.base import Detection
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)
PACK_ENV = "MVFER_INSIGHTFACE_PACK"
FIX = (
    "download an insightface pack (e.g. buffalo_l, non-commercial research licence) on a machine "
    "with internet, unzip it, and set align.insightface_pack or $MVFER_INSIGHTFACE_PACK to its folder"
)


class InsightFacePackError(PipelineError, FileNotFoundError):
    """The insightface pack is missing or unusable; the message names the path and the fix."""


def find_detector_file(pack: str | Path | None) -> Path:
    """The SCRFD .onnx of a pack: the path itself if a file, else det_*.onnx / scrfd*.onnx inside."""
    raw = os.environ.get(PACK_ENV) or (str(pack) if pack else "")
    if not raw:
        raise InsightFacePackError(f"no insightface pack configured (align.insightface_pack is empty); fix: {FIX}")
    path = Path(raw).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise InsightFacePackError(f"insightface pack {path} does not exist; fix: {FIX}")
    candidates = sorted(path.glob("det_*.onnx")) + sorted(path.glob("scrfd*.onnx"))
    if not candidates:
        raise InsightFacePackError(f"insightface pack {path} holds no detector (det_*.onnx or scrfd*.onnx); fix: {FIX}")
    return candidates[0]


class InsightFaceDetector:
    """SCRFD boxes, scores and 5 points; CPU provider, CUDA provider first when available."""

    name = "insightface"

    def __init__(
        self,
        pack: str | Path | None = None,
        det_size: int = 640,
        det_thresh: float = 0.5,
        min_face_px: int = 20,
        device: str | None = None,
    ) -> None:
        model_file = find_detector_file(pack)
        try:
            import onnxruntime as ort
            from insightface.model_zoo import get_model
        except ImportError as e:
            raise InsightFacePackError(f"insightface/onnxruntime not importable ({e}); fix: `make install`") from None
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            model = get_model(str(model_file), providers=providers)  # a direct path: never downloads
        except Exception as e:  # onnxruntime raises several types for a corrupt or foreign file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InsightFacePackError(f"cannot load {model_file}: {first}; fix: {FIX}") from None
        if model is None or not hasattr(model, "detect"):
            raise InsightFacePackError(f"{model_file} is not an SCRFD face detector; fix: {FIX}")
        model.prepare(
            ctx_id=0 if providers[0].startswith("CUDA") else -1, input_size=(det_size, det_size), det_thresh=det_thresh
        )
        self.model, self.min_face_px = model, min_face_px
        log.info("insightface detector %s on %s", model_file, providers[0])

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        bboxes, kpss = self.model.detect(np.ascontiguousarray(image_rgb[..., ::-1]))  # SCRFD takes BGR
        out = []
        for box, kps in zip(bboxes, kpss if kpss is not None else [None] * len(bboxes)):
            d = Detection(
                box=np.asarray(box[:4], np.float32),
                score=float(box[4]),
                landmarks=np.asarray(kps, np.float32) if kps is not None else np.zeros((5, 2), np.float32),
            )
            if d.size >= self.min_face_px:
                out.append(d)
        return sorted(out, key=lambda d: -d.score)
