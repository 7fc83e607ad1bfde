"""5-point similarity alignment onto the ArcFace template, as the field aligns faces.

The template and the least-squares similarity (Umeyama 1991) are those of insightface's
`utils.face_align.norm_crop`; implemented here so alignment needs no model pack and no import of
insightface, and checked against it in the tests.
"""

from __future__ import annotations

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


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity (rotation, uniform scale, shift) taking src to dst."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.diag([1.0, 1.0 if np.linalg.det(U) * np.linalg.det(Vt) >= 0 else -1.0])
    R = U @ D @ Vt
    var_s = (s**2).sum() / len(src)
    scale = float(np.trace(np.diag(S) @ D) / var_s) if var_s > 0 else 1.0
    M = np.empty((2, 3))
    M[:, :2] = scale * R
    M[:, 2] = mu_d - scale * R @ mu_s
    return M


def align_crop(image: np.ndarray, points5: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The aligned square crop and the 2x3 matrix that made it (black outside the image)."""
    M = similarity(points5, template(size))
    return cv2.warpAffine(image, M, (size, size), borderValue=0.0), M
