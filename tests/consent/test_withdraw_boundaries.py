"""Withdrawal matches ids as whole tokens: withdrawing `S1` leaves `S10`'s files, rows and cache
objects intact, and binary files (video, checkpoints, cache objects) are never byte-searched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import stages
from pipeline.layout import Layout
from pipeline.privacy import artifacts, dvc_cache, scrub

IDS = {"S1", "S1_t01"}
BINARY = b"\x00\x1a\xffftyp S1 \x00\x8f\x9e"  # binary bytes that happen to hold 'S1'


def test_ids_match_at_boundaries_only() -> None:
    assert scrub.mentions("S1_t01.npz", {"S1"}) and scrub.mentions("aligned/S1.npz", {"S1"})
    assert not scrub.mentions("S10_t01.npz", {"S1"}) and not scrub.mentions("XS1_t01", {"S1"})
    assert scrub.lines("S1_t01: ok\nS10_t01: ok\n", IDS) == ("S10_t01: ok\n", 1)


@pytest.fixture
def project(layout: Layout) -> Layout:
    root = layout.root
    for rel in ("data/interim", "data/aligned", "data/processed", "models", "reports", "annotations", "data/media"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    for t in ("S1_t01", "S10_t01"):
        np.savez(root / "data/aligned" / f"{t}.npz", frames=np.zeros((2, 4, 4, 3), np.uint8))
    (root / "data/media/S10_t01.mp4").write_bytes(BINARY)
    (root / "models/fold0_seed0.pt").write_bytes(BINARY)
    (root / "reports/qa.md").write_text("S1_t01: ok\nS10_t01: ok\n")
    pd.DataFrame({"take_id": ["S1_t01", "S10_t01"], "subject_id": ["S1", "S10"]}).to_csv(
        root / "data/processed/takes.csv", index=False
    )
    return layout


def test_withdrawing_s1_leaves_s10_files_intact(project: Layout) -> None:
    root = project.root
    counts = artifacts.clean_outputs(project, artifacts.output_roots(project, project.raw), IDS)
    assert not (root / "data/aligned/S1_t01.npz").exists() and (root / "data/aligned/S10_t01.npz").exists()
    assert (root / "data/media/S10_t01.mp4").read_bytes() == BINARY  # an S10 video holding the bytes 'S1'
    assert (root / "models/fold0_seed0.pt").read_bytes() == BINARY
    assert (root / "reports/qa.md").read_text() == "S10_t01: ok\n"
    assert list(pd.read_csv(root / "data/processed/takes.csv")["subject_id"]) == ["S10"]
    assert counts["data/aligned"] == {"deleted": 1} and "data/media" not in counts and "models" not in counts


def test_what_is_cleaned_comes_from_the_stage_registry(layout: Layout, tmp_path: Path) -> None:
    """Every stage output but release/ (purged on its own) and the raw input; plus the annotation exports."""
    roots = {layout.relative(p) for p in artifacts.output_roots(layout, layout.raw)}
    assert roots == (set(stages.output_roots()) - {"release", "data/raw"}) | {"annotations"}
    assert {"data/interim", "data/aligned", "data/media", "data/processed", "models", "reports"} <= roots
    rig = tmp_path / "rig"  # a real rig's folder: the simulator's data/raw is still never cleaned
    assert "data/raw" not in {layout.relative(p) for p in artifacts.output_roots(layout, rig)}


def _put(cache: Path, data: bytes, suffix: str = "") -> Path:
    h = hashlib.md5(data).hexdigest()  # noqa: S324 - DVC's cache naming
    p = cache / "files" / "md5" / h[:2] / (h[2:] + suffix)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_the_dvc_cache_goes_by_listing_and_md5_never_by_bytes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    s1, s10 = _put(cache, b"\x00npz of S1_t01 \xff"), _put(cache, b"\x00npz of S10_t01 \xff")
    video = _put(cache, BINARY)
    listing = [
        {"md5": dvc_cache._object_md5(s1), "relpath": "S1_t01.npz"},
        {"md5": dvc_cache._object_md5(s10), "relpath": "S10_t01.npz"},
    ]
    dir_obj = _put(cache, json.dumps(listing).encode(), ".dir")
    only_s10 = _put(cache, json.dumps([listing[1]]).encode(), ".dir")
    assert dvc_cache.purge(cache, IDS, set()) == 2
    assert not s1.exists() and not dir_obj.exists()
    assert s10.exists() and video.exists() and only_s10.exists()
