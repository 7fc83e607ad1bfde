"""Names for modes of variation: a head pose (yaw, pitch) under an illumination.

One naming scheme shared by the simulator's verification, the splits and the reports.
"""

from __future__ import annotations


def pose_id(yaw: float, pitch: float) -> str:
    """`yaw-30_pitch+0`: readable, sortable, and stable for float inputs that are whole degrees."""
    return f"yaw{int(round(yaw)):+d}_pitch{int(round(pitch)):+d}"


def mode_id(yaw: float, pitch: float, illumination: str) -> str:
    return f"{pose_id(yaw, pitch)}/{illumination}"
