"""Alignment accuracy against the simulator's truth: detection rate and 5-point NME per mode.

NME is the mean point error divided by the true inter-ocular distance, over frames where a face
was found. Only simulated takes have truth; a take without it is counted and skipped.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import vocab
from pipeline.modes import manifest_modes, pose_id


def nme(points: np.ndarray, truth5: np.ndarray) -> np.ndarray:
    """Mean 5-point error over the true inter-ocular distance, for (..., 5, 2) arrays."""
    iod = np.linalg.norm(truth5[..., 0, :] - truth5[..., 1, :], axis=-1)
    return np.linalg.norm(points - truth5, axis=-1).mean(axis=-1) / np.maximum(iod, 1e-6)


def take_errors(points: np.ndarray, valid: np.ndarray, truth5: np.ndarray) -> np.ndarray:
    """Per-frame NME (NaN where no face was found)."""
    T = min(len(points), len(truth5))
    return np.where(valid[:T], nme(points[:T], truth5[:T]), np.nan)


def _summary(values: list[np.ndarray]) -> dict:
    allv = np.concatenate(values) if values else np.array([])
    found = allv[~np.isnan(allv)]
    return {
        "frames": int(allv.size),
        "detection_rate": round(float(found.size / allv.size), 4) if allv.size else None,
        "nme_mean": round(float(found.mean()), 4) if found.size else None,
        "nme_median": round(float(np.median(found)), 4) if found.size else None,
        "failure_rate_nme_gt_0.2": round(float((found > 0.2).mean()), 4) if found.size else None,
    }


def accuracy(manifest: pd.DataFrame, aligned: Path, truth_dir: Path) -> dict:
    """Figures overall, per pose, per illumination and per mode."""
    groups: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    no_truth = 0
    manifest_modes(manifest)  # ingest's mode, never recomputed
    row: Any  # a manifest row (itertuples)
    for row in manifest[manifest["status"] == vocab.ACCEPTED].itertuples(index=False):
        tfile, afile = truth_dir / f"{row.take_id}.npz", aligned / f"{row.take_id}.npz"
        if not tfile.exists() or not afile.exists():
            no_truth += 1
            continue
        with np.load(afile) as a, np.load(tfile) as t:
            e = take_errors(a["points"], a["valid"], t["landmarks5"])
        keys = {"pose": pose_id(row.yaw, row.pitch), "illumination": row.illumination, "mode": row.mode}
        groups["overall"]["all"].append(e)
        for kind, k in keys.items():
            groups[kind][k].append(e)
    out: dict[str, Any] = {kind: {k: _summary(v) for k, v in sorted(g.items())} for kind, g in groups.items()}
    out["takes_without_truth"] = no_truth
    return out
