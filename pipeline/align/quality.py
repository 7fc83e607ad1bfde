"""Per-frame quality figures and the per-take verdict (flagged with reasons, never dropped).

Figures are computed in exact integer sums or scalar libm calls, never with SIMD reductions or
vectorised transcendental functions whose last bits vary with the CPU.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Yaw from 5 points: the nose tip's offset from the eye midpoint along the eye axis, in half eye
# distances, is about sin(yaw) * YAW_GAIN. Calibrated on the simulator's truth (0, +-30 degrees).
YAW_GAIN = 1.1


def blur_score(gray: np.ndarray) -> float:
    """Variance of the Laplacian: low for blurred (or featureless) crops (exact integer sums)."""
    lap = cv2.Laplacian(gray, cv2.CV_16S).astype(np.int64)
    n, s1, s2 = lap.size, int(lap.sum()), int((lap * lap).sum())
    return (n * s2 - s1 * s1) / (n * n) if n else float("nan")


def estimate_yaw(points: np.ndarray) -> float:
    """Head yaw in degrees from 5 points (positive: nose towards image-right)."""
    (lx, ly), (rx, ry), (nx, ny) = ((float(v) for v in points[i]) for i in range(3))
    ax, ay = rx - lx, ry - ly
    iod = math.hypot(ax, ay)
    if iod < 1e-6:
        return float("nan")
    offset = ((nx - (lx + rx) / 2) * ax + (ny - (ly + ry) / 2) * ay) / iod / (iod / 2)
    return math.degrees(math.asin(min(max(offset / YAW_GAIN, -1.0), 1.0)))


def longest_gap(valid: np.ndarray) -> int:
    """Longest run of frames without a face."""
    best = run = 0
    for v in valid:
        run = 0 if v else run + 1
        best = max(best, run)
    return best


def take_verdict(summary: dict, thresholds: dict) -> list[tuple[str, str]]:
    """(code, reason) for each threshold in params the take fails (empty: it passes)."""
    reasons = []
    if summary["decoded_frames"] < summary["expected_frames"]:
        reasons.append(
            (
                "decode_stopped",
                f"decoding stopped at frame {summary['decoded_frames']} of {summary['expected_frames']} "
                "(corrupt mid-stream)",
            )
        )
    if summary["detection_rate"] < thresholds["min_detection_rate"]:
        reasons.append(
            (
                "low_detection_rate",
                f"face found in {summary['detection_rate']:.0%} of frames (< {thresholds['min_detection_rate']:.0%})",
            )
        )
    if summary["longest_gap"] > thresholds["max_gap_frames"]:
        reasons.append(
            (
                "long_gap",
                f"{summary['longest_gap']} consecutive frames without a face (> {thresholds['max_gap_frames']})",
            )
        )
    if summary["median_iod_px"] is not None and summary["median_iod_px"] < thresholds["min_iod_px"]:
        reasons.append(
            (
                "small_face",
                f"face too small: median eye distance {summary['median_iod_px']:.1f} px (< {thresholds['min_iod_px']})",
            )
        )
    if summary["median_blur"] is not None and summary["median_blur"] < thresholds["min_blur"]:
        reasons.append(
            ("blurred", f"blurred: median Laplacian variance {summary['median_blur']:.1f} (< {thresholds['min_blur']})")
        )
    return reasons
