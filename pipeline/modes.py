"""Names for modes of variation: a head pose (yaw, pitch) under an illumination.

One naming scheme shared by the simulator's verification, the splits and the reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from pipeline.errors import PipelineError


def pose_id(yaw: float, pitch: float) -> str:
    """`yaw-30_pitch+0`: readable, sortable, and stable for float inputs that are whole degrees."""
    return f"yaw{int(round(yaw)):+d}_pitch{int(round(pitch)):+d}"


def mode_id(yaw: float, pitch: float, illumination: str) -> str:
    return f"{pose_id(yaw, pitch)}/{illumination}"


DEFAULT_FIELDS = ("yaw", "pitch", "illumination")


def _missing(x: object) -> bool:
    if x is None or x is pd.NA or (isinstance(x, str) and not x.strip()):
        return True
    return isinstance(x, float) and math.isnan(x)


def mode_of(values: Mapping[str, object], fields: Sequence[str] = DEFAULT_FIELDS) -> str:
    """The mode of a take from the fields that define one (`ingest.mode_fields`), computed once by ingest.

    yaw and pitch together read as a pose (`yaw-30_pitch+0`), so the default fields give the same
    names as `mode_id`; any other field contributes its value (Oulu-CASIA: `VL/Strong`). A value
    the log leaves empty reads `unknown`, never a guess.
    """
    parts: list[str] = []
    fields = list(fields)
    i = 0
    while i < len(fields):
        f = fields[i]
        if f == "yaw" and i + 1 < len(fields) and fields[i + 1] == "pitch":
            y, p = values.get("yaw"), values.get("pitch")
            parts.append("unknown_pose" if _missing(y) or _missing(p) else pose_id(float(y), float(p)))  # type: ignore[arg-type]
            i += 2
            continue
        v = values.get(f)
        if f in ("yaw", "pitch") and not _missing(v):
            parts.append(f"{f}{int(round(float(v))):+d}")  # type: ignore[arg-type]
        else:
            parts.append("unknown" if _missing(v) else str(v))
        i += 1
    return "/".join(parts)


class MissingModeError(PipelineError, ValueError):
    """A manifest written before ingest stored each take's mode."""


def manifest_modes(manifest: pd.DataFrame) -> pd.Series:
    """The `mode` column ingest computed from `ingest.mode_fields`, never recomputed from yaw/pitch/illumination.

    Why: recomputing with `mode_id` names modes wrongly for datasets whose mode fields differ
    (an imported dataset's `mode_fields`); a manifest without the column must be rebuilt.
    """
    if "mode" not in manifest.columns:
        raise MissingModeError(
            "data/interim/manifest.parquet: no column 'mode' (ingest writes it from ingest.mode_fields): re-run ingest"
        )
    return manifest["mode"]
