"""MTCNN face detector (Zhang et al. 2016): P-Net, R-Net, O-Net cascade, run with our own torch code.

The MIT-licensed weights ship in the `facenet-pytorch` wheel (`facenet_pytorch/data/*.pt`). That
package cannot be imported here (it pins an old torch and imports torchvision), so it is installed
`--no-deps` purely as the carrier of the weights, located with importlib without importing it.

Box coordinates follow the original cascade's 1-based inclusive convention internally and are
converted to 0-based pixels on output.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.align.detectors.base import Detection
from pipeline.align.detectors.nms import nms
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

WEIGHTS_ENV = "MVFER_MTCNN_WEIGHTS"
_WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")


class MTCNNWeightsMissing(PipelineError, FileNotFoundError):
    """The weight files are not on disk; the message says how to get them."""


def find_weights_dir() -> Path:
    """The directory holding pnet.pt, rnet.pt, onet.pt: $MVFER_MTCNN_WEIGHTS, else the carrier wheel."""
    env = os.environ.get(WEIGHTS_ENV)
    candidates: list[Path] = [Path(env)] if env else []
    spec = importlib.util.find_spec("facenet_pytorch")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "data" for p in spec.submodule_search_locations]
    for c in candidates:
        if all((c / f).is_file() for f in _WEIGHT_FILES):
            return c
    looked = ", ".join(str(c) for c in candidates) or "nowhere (facenet-pytorch not installed)"
    raise MTCNNWeightsMissing(
        f"MTCNN weights ({', '.join(_WEIGHT_FILES)}) not found; looked in {looked}. "
        f"Fix: `pip install --no-deps facenet-pytorch==2.6.0` (done by `make install`), "
        f"or set {WEIGHTS_ENV} to a directory holding them."
    )


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)[:, 1]


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were converted from a (W, H, C)-ordered framework: flatten in that order.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output net on 48x48 crops: final box, score and 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)[:, 1]


def _pyramid_scales(h: int, w: int, min_face: int, factor: float) -> list[float]:
    """Scales at which a face of `min_face` pixels fills P-Net's 12-pixel window."""
    scale = 12.0 / min_face
    side = min(h, w) * scale
    scales = []
    while side >= 12:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _proposals(reg: torch.Tensor, prob: torch.Tensor, scale: float, threshold: float) -> torch.Tensor:
    """P-Net map cells above threshold as boxes in image coords: (x1, y1, x2, y2, score, 4 x reg)."""
    stride, cell = 2, 12
    ys, xs = torch.nonzero(prob >= threshold, as_tuple=True)
    score = prob[ys, xs]
    r = reg[:, ys, xs].T
    xy = torch.stack([xs, ys], dim=1).to(reg.dtype)
    q1 = torch.floor((stride * xy + 1) / scale)
    q2 = torch.floor((stride * xy + cell) / scale)
    return torch.cat([q1, q2, score[:, None], r], dim=1)


def _square(b: torch.Tensor) -> torch.Tensor:
    """Grow boxes to squares around their centres (the nets take square crops)."""
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = torch.maximum(w, h)
    x1 = b[:, 0] + w * 0.5 - side * 0.5
    y1 = b[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _regress(b: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Apply a net's box regression (offsets relative to inclusive width and height)."""
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    return b + reg * torch.stack([w, h, w, h], dim=1)


def _crops(img: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Square crops resized to `size`; parts outside the image are zero (black), as in the original."""
    _, h, w = img.shape
    out = []
    for x1, y1, x2, y2 in boxes.trunc().int().tolist():
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        patch = torch.zeros((3, bh, bw), dtype=img.dtype)
        sx1, sy1 = max(x1 - 1, 0), max(y1 - 1, 0)
        sx2, sy2 = min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            dx, dy = sx1 - (x1 - 1), sy1 - (y1 - 1)
            patch[:, dy : dy + sy2 - sy1, dx : dx + sx2 - sx1] = img[:, sy1:sy2, sx1:sx2]
        out.append(F.interpolate(patch[None], size=(size, size), mode="area"))
    return torch.cat(out, dim=0)


class MTCNN:
    """Face detector returning boxes, scores and 5 points; CPU by default, CUDA when asked."""

    name = "mtcnn"

    def __init__(
        self,
        min_face_px: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        device: str | None = None,
        weights_dir: Path | None = None,
        precision: str = "float32",
    ) -> None:
        self.min_face_px = int(min_face_px)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision not in ("float32", "float64"):
            raise ValueError(f"MTCNN precision must be float32 or float64, got {precision!r}")
        # float64 leaves CPU-dependent rounding ~1e-13 px instead of ~1e-5 px: snapped to the
        # 1/64-pixel grid, the points then agree across instruction sets (see pipeline/align/tracking.py)
        self.dtype = torch.float64 if precision == "float64" else torch.float32
        wdir = Path(weights_dir) if weights_dir else find_weights_dir()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for net, fname in zip((self.pnet, self.rnet, self.onet), _WEIGHT_FILES):
            net.load_state_dict(torch.load(wdir / fname, map_location="cpu", weights_only=True))
            net.to(self.device, dtype=self.dtype).eval()
        log.debug("MTCNN weights loaded from %s on %s", wdir, self.device)

    @torch.inference_mode()
    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
        h, w = image_rgb.shape[:2]
        img = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(self.device).permute(2, 0, 1).to(self.dtype)
        t1, t2, t3 = self.thresholds

        found = []
        for scale in _pyramid_scales(h, w, self.min_face_px, self.factor):
            size = (int(h * scale + 1), int(w * scale + 1))
            x = _normalize(F.interpolate(img[None], size=size, mode="area"))
            reg, prob = self.pnet(x)
            boxes = _proposals(reg[0], prob[0], scale, t1)
            if len(boxes):
                found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5).to(boxes.device)])
        if not found:
            return []
        boxes = torch.cat(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7).to(boxes.device)]
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        b = _square(boxes[:, :4] + boxes[:, 5:9] * torch.stack([bw, bh, bw, bh], dim=1))

        reg, score = self.rnet(_normalize(_crops(img, b, 24)))
        ok = score > t2
        b, score, reg = b[ok], score[ok], reg[ok]
        if not len(b):
            return []
        keep = nms(b, score, 0.7).to(b.device)
        b = _square(_regress(b[keep], reg[keep]))

        reg, pts, score = self.onet(_normalize(_crops(img, b, 48)))
        ok = score > t3
        b, score, reg, pts = b[ok], score[ok], reg[ok], pts[ok]
        if not len(b):
            return []
        bw, bh = (b[:, 2] - b[:, 0] + 1)[:, None], (b[:, 3] - b[:, 1] + 1)[:, None]
        px = bw * pts[:, :5] + b[:, 0:1] - 1
        py = bh * pts[:, 5:] + b[:, 1:2] - 1
        b = _regress(b, reg)
        keep = nms(b, score, 0.7, mode="min").to(b.device)
        b, score = b[keep] - 1, score[keep]
        points = torch.stack([px[keep], py[keep]], dim=2)
        return [
            Detection(box=bb.cpu().numpy(), score=float(s), landmarks=p.cpu().numpy())
            for bb, s, p in zip(b, score, points)
        ]
