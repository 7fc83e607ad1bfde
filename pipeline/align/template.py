"""5-point similarity alignment onto the ArcFace template, as the field aligns faces.

The template and the least-squares similarity (Umeyama 1991) are those of insightface's
`utils.face_align.norm_crop`; implemented here so alignment needs no model pack and no import of
insightface, and checked against it in the tests.

Same bytes on any CPU: the similarity is the closed-form 2-D least-squares fit in plain Python
floats (no SVD/BLAS, whose kernels differ by instruction set), points are first snapped to a
1/64-pixel grid, and the warp is bilinear in integer fixed point (1/32-pixel positions, integer
weights), so nothing in it depends on SIMD width, FMA or the BLAS build.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# ArcFace 112 x 112 template: left eye, right eye, nose tip, left and right mouth corner.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def template(size: int) -> np.ndarray:
    """The template for a square crop of `size` pixels (multiples of 112 scale, of 128 shift by 8)."""
    if size % 112 == 0:
        return ARCFACE_112 * (size / 112.0)
    if size % 128 == 0:
        t = ARCFACE_112 * (size / 128.0)
        t[:, 0] += 8.0 * size / 128.0
        return t
    raise ValueError(f"crop size must be a multiple of 112 or 128, got {size}")


GRID = 64  # points are snapped to 1/GRID pixel before tracking decisions and the warp
_SUB = 32  # warp sample positions in 1/_SUB pixel (OpenCV's INTER_TAB_SIZE)


def snap(points: np.ndarray) -> np.ndarray:
    """Points on the 1/64-pixel grid: removes the last-bit noise of a detector's float kernels."""
    return np.round(np.asarray(points, np.float64) * GRID) / GRID


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity (rotation, uniform scale, shift) taking src to dst.

    The closed form of Umeyama's fit in 2-D (a proper rotation: [[a, -b], [b, a]]), summed in a
    fixed order in Python floats, so the matrix is bit-identical on every machine.
    """
    src_l = [(float(x), float(y)) for x, y in np.asarray(src, np.float64)]
    dst_l = [(float(x), float(y)) for x, y in np.asarray(dst, np.float64)]
    n = len(src_l)
    msx, msy = math.fsum(p[0] for p in src_l) / n, math.fsum(p[1] for p in src_l) / n
    mdx, mdy = math.fsum(p[0] for p in dst_l) / n, math.fsum(p[1] for p in dst_l) / n
    sxx = math.fsum((sx - msx) ** 2 + (sy - msy) ** 2 for sx, sy in src_l)
    num_a = math.fsum((sx - msx) * (dx - mdx) + (sy - msy) * (dy - mdy) for (sx, sy), (dx, dy) in zip(src_l, dst_l))
    num_b = math.fsum((sx - msx) * (dy - mdy) - (sy - msy) * (dx - mdx) for (sx, sy), (dx, dy) in zip(src_l, dst_l))
    a, b = (num_a / sxx, num_b / sxx) if sxx > 0 else (1.0, 0.0)
    return np.array([[a, -b, mdx - (a * msx - b * msy)], [b, a, mdy - (b * msx + a * msy)]], np.float64)


def sample_grid(M: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source positions of every output pixel under M, in 1/32 pixel (int32 x and y, [row, col])."""
    (a, b, c), (d, e, f) = (float(v) for v in M[0]), (float(v) for v in M[1])
    det = a * e - b * d
    if det == 0:
        raise ValueError("singular alignment matrix")
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    ic, if_ = -(ia * c + ib * f), -(id_ * c + ie * f)
    coords = np.arange(size, dtype=np.float64)
    xs = np.add.outer(coords * ib, coords * ia) + ic  # one IEEE operation per step: exact on any CPU
    ys = np.add.outer(coords * ie, coords * id_) + if_
    return np.floor(xs * _SUB + 0.5).astype(np.int32), np.floor(ys * _SUB + 0.5).astype(np.int32)


def warp(image: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """Bilinear warp of a uint8 image by the 2x3 matrix M into size x size, black outside.

    Positions are quantised here (exact float steps), then OpenCV's fixed-point remap does integer
    arithmetic only, so any CPU gives the same bytes (cv2.warpAffine's float SIMD paths need not).
    """
    qx, qy = sample_grid(M, size)
    ints = np.stack([qx >> 5, qy >> 5], axis=-1).astype(np.int16)
    frac = ((qy & (_SUB - 1)) * _SUB + (qx & (_SUB - 1))).astype(np.uint16)
    return cv2.remap(image, ints, frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_crop(image: np.ndarray, points5: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The aligned square crop and the 2x3 matrix that made it (black outside the image)."""
    M = similarity(points5, template(size))
    return warp(image, M, size), M
