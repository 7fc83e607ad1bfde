"""One frame convention: the pipeline stores 0-based take frames; Label Studio's player counts from 1.

The video player shows "k of N" and `<TimelineLabels>` results carry `ranges[{start, end}]` in the
same 1-based frame numbers (measured in Chromium with Label Studio 1.23.2: marking the player's
frame 5 of a clip whose frame i shows the digit i gives `start: 5` over the image of take frame 4).
Every conversion goes through these two functions, so the offset lives in one place.
"""

from __future__ import annotations

import math

PLAYER_FIRST_FRAME = 1


def take_frame(player_frame: float) -> int:
    """0-based take frame of a 1-based player/timeline frame (rounded: the timeline may give floats)."""
    if player_frame is None or not math.isfinite(float(player_frame)):
        raise ValueError(f"not a frame number: {player_frame!r}")
    return int(round(float(player_frame))) - PLAYER_FIRST_FRAME


def player_frame(take_frame_0: int) -> int:
    """1-based player/timeline frame of a 0-based take frame."""
    return int(take_frame_0) + PLAYER_FIRST_FRAME


def in_range(frame_0: int, n_frames: int) -> bool:
    """Is a 0-based frame inside a take of `n_frames` frames?"""
    return 0 <= frame_0 < n_frames
