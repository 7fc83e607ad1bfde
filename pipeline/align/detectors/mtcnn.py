"""MTCNN face detector (Zhang et al. 2016): P-Net, R-Net, O-Net cascade, run with our own torch code.

The MIT-licensed weights ship in the `facenet-pytorch` wheel (`facenet_pytorch/data/*.pt`). That
package cannot be imported here (it pins an old torch and imports torchvision), so it is installed
`--no-deps` purely as the carrier of the weights, located with importlib without importing it.

Box coordinates follow the original cascade's 1-based inclusive convention internally and are
converted to 0-based pixels on output.

`detect_batch` runs the cascade over many images at once: P-Net over every image of one size at each
pyramid scale in one call, the convolutions of R-Net and O-Net over the candidate boxes of all images
in one call each. It gives bit for bit what one image at a time gives (tests/align/test_mtcnn.py, in
float64): convolutions, area resizing and soft-max compute each sample on its own, non-maximum
suppression stays per image, and so do the dense layers, because MKL's matrix product rounds a row
differently with the number of rows. Max pooling runs on a channels-last copy: a maximum has no
rounding, and torch's channels-last float64 kernel is several times faster than its planar one.

Align still detects one keyframe at a time (the tracker decides the next keyframe from this one's
result): measured on 160-pixel takes (scripts/bench_align.py), a batch of a take's 4 keyframes costs
as much CPU per image as single calls, and larger batches cost more, since float64 convolutions run
as im2col + a matrix product per sample through a buffer sized for the whole batch: batching saves
Python calls, not arithmetic, and the arithmetic dominates.
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


class _MaxPool(nn.MaxPool2d):
    """Max pooling through channels-last memory: the same maxima, several times faster in float64."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = _MaxPool(2, 2, ceil_mode=True)
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
        self.pool1 = _MaxPool(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = _MaxPool(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutions, per crop; flattened in the (W, H, C) order the weights were converted from."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)

    def head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)[:, 1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.trunk(x))


class ONet(nn.Module):
    """Output net on 48x48 crops: final box, score and 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = _MaxPool(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = _MaxPool(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = _MaxPool(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutions, per crop; flattened in the (W, H, C) order the weights were converted from."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)

    def head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)[:, 1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head(self.trunk(x))


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
    """Square crops resized to `size`; parts outside the image are zero (black), as in the original.

    The crops are cut from one zero-padded copy of the image, and crops of the same pixel size are
    resized in one call (area resizing works per sample): the pixels of a zero-filled patch per box.
    """
    _, h, w = img.shape
    corners = boxes.trunc().int().tolist()
    out = torch.empty((len(corners), 3, size, size), dtype=img.dtype, device=img.device)
    if not corners:
        return out
    left = max(0, max(1 - x1 for x1, _, _, _ in corners))
    top = max(0, max(1 - y1 for _, y1, _, _ in corners))
    right = max(0, max(x2 - w for _, _, x2, _ in corners))
    bottom = max(0, max(y2 - h for _, _, _, y2 in corners))
    padded = F.pad(img, (left, right, top, bottom)) if left or top or right or bottom else img
    groups: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
    for i, (x1, y1, x2, y2) in enumerate(corners):
        patch = padded[:, y1 - 1 + top : y2 + top, x1 - 1 + left : x2 + left]
        groups.setdefault((y2 - y1 + 1, x2 - x1 + 1), []).append((i, patch))
    for group in groups.values():
        index = torch.tensor([i for i, _ in group], device=img.device)
        out[index] = F.interpolate(torch.stack([p for _, p in group]), size=(size, size), mode="area")
    return out


def _per_image(net: RNet | ONet, crops: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """A refinement net over the crops of several images: convolutions in one call, dense layers per image.

    The dense layers stay per image because the BLAS's matrix product rounds a row differently with
    the number of rows (MKL's kernels for row counts not a multiple of 4); per image, each image sees
    exactly the rows it saw alone. The convolutions compute each crop on its own at any batch size.
    """
    flat = net.trunk(torch.cat(crops))
    return [net.head(rows.clone()) for rows in torch.split(flat, [len(c) for c in crops])]


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

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        """All faces in one H x W x 3 uint8 RGB image, best score first."""
        return self.detect_batch([image_rgb])[0]

    @torch.inference_mode()
    def detect_batch(self, images_rgb: Sequence[np.ndarray]) -> list[list[Detection]]:
        """The faces of each image, as `detect` finds them one image at a time (bit for bit)."""
        for image_rgb in images_rgb:
            if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
                raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
        imgs = [
            torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1).to(self.dtype)
            for im in images_rgb
        ]
        t1, t2, t3 = self.thresholds
        n = len(imgs)

        # Stage 1: P-Net over each pyramid scale, one call per scale for all images of one size.
        found: list[list[torch.Tensor]] = [[] for _ in range(n)]
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(imgs):
            by_shape.setdefault((img.shape[1], img.shape[2]), []).append(i)
        for (h, w), members in by_shape.items():
            stack = torch.stack([imgs[i] for i in members])
            for scale in _pyramid_scales(h, w, self.min_face_px, self.factor):
                size = (int(h * scale + 1), int(w * scale + 1))
                reg, prob = self.pnet(_normalize(F.interpolate(stack, size=size, mode="area")))
                for j, i in enumerate(members):
                    boxes = _proposals(reg[j], prob[j], scale, t1)
                    if len(boxes):
                        found[i].append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5).to(boxes.device)])
        cand: list[torch.Tensor] = []
        for i in range(n):
            if not found[i]:
                cand.append(torch.empty((0, 4), dtype=self.dtype, device=self.device))
                continue
            boxes = torch.cat(found[i])
            boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7).to(boxes.device)]
            bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            cand.append(_square(boxes[:, :4] + boxes[:, 5:9] * torch.stack([bw, bh, bw, bh], dim=1)))

        # Stage 2: R-Net over the candidates of all images in one call.
        live = [i for i in range(n) if len(cand[i])]
        if live:
            refined = _per_image(self.rnet, [_normalize(_crops(imgs[i], cand[i], 24)) for i in live])
            for i, (reg, score) in zip(live, refined):
                ok = score > t2
                b, score, reg = cand[i][ok], score[ok], reg[ok]
                if not len(b):
                    cand[i] = b
                    continue
                keep = nms(b, score, 0.7).to(b.device)
                cand[i] = _square(_regress(b[keep], reg[keep]))

        # Stage 3: O-Net over the refined boxes of all images in one call.
        out: list[list[Detection]] = [[] for _ in range(n)]
        live = [i for i in range(n) if len(cand[i])]
        if not live:
            return out
        final = _per_image(self.onet, [_normalize(_crops(imgs[i], cand[i], 48)) for i in live])
        for i, (reg, pts, score) in zip(live, final):
            ok = score > t3
            b, score, reg, pts = cand[i][ok], score[ok], reg[ok], pts[ok]
            if not len(b):
                continue
            bw, bh = (b[:, 2] - b[:, 0] + 1)[:, None], (b[:, 3] - b[:, 1] + 1)[:, None]
            px = bw * pts[:, :5] + b[:, 0:1] - 1
            py = bh * pts[:, 5:] + b[:, 1:2] - 1
            b = _regress(b, reg)
            keep = nms(b, score, 0.7, mode="min").to(b.device)
            b, score = b[keep] - 1, score[keep]
            points = torch.stack([px[keep], py[keep]], dim=2)
            out[i] = [
                Detection(box=bb.cpu().numpy(), score=float(s), landmarks=p.cpu().numpy())
                for bb, s, p in zip(b, score, points)
            ]
        return out
