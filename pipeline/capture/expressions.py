"""Expressions as FACS action units (EMFACS prototypes) and their time course.

Prototypes (Friesen & Ekman's EMFACS): happiness 6+12; sadness 1+4+15; surprise 1+2+5+26;
fear 1+2+4+5+7+20+26; anger 4+5+7+23; disgust 9+15+16. Neutral activates nothing.
"""

from __future__ import annotations

import numpy as np

ACTION_UNITS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 12, 15, 16, 20, 23, 26)

PROTOTYPES: dict[str, tuple[int, ...]] = {
    "neutral": (),
    "anger": (4, 5, 7, 23),
    "disgust": (9, 15, 16),
    "fear": (1, 2, 4, 5, 7, 20, 26),
    "happiness": (6, 12),
    "sadness": (1, 4, 15),
    "surprise": (1, 2, 5, 26),
}


def au_vector(expression: str, intensity: float, gains: dict[int, float] | None = None) -> dict[int, float]:
    """AU intensities in [0, 1] for an expression at a given overall intensity."""
    if expression not in PROTOTYPES:
        raise ValueError(f"unknown expression {expression!r}; known: {', '.join(PROTOTYPES)}")
    gains = gains or {}
    aus = {au: 0.0 for au in ACTION_UNITS}
    for au in PROTOTYPES[expression]:
        aus[au] = float(np.clip(intensity * gains.get(au, 1.0), 0.0, 1.0))
    return aus


def intensity_curve(n_frames: int, onset: int, apex: int, peak: float, return_to_neutral: bool) -> np.ndarray:
    """Per-frame expression intensity: neutral, smooth rise to the apex, hold (or fall back).

    Smoothstep ramps, as real expressions accelerate then settle; the apex frame is the first
    frame at peak intensity.
    """
    if not 0 <= onset < apex < n_frames:
        raise ValueError(f"need 0 <= onset < apex < n_frames, got {onset}, {apex}, {n_frames}")
    t = np.arange(n_frames, dtype=np.float64)
    rise = np.clip((t - onset) / (apex - onset), 0.0, 1.0)
    curve = rise * rise * (3 - 2 * rise)
    if return_to_neutral:
        hold_end = apex + max(1, (n_frames - apex) // 3)
        fall = np.clip((t - hold_end) / max(1, n_frames - 1 - hold_end), 0.0, 1.0)
        curve = curve * (1 - fall * fall * (3 - 2 * fall))
    return peak * curve
