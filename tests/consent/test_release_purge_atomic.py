"""Purging a release rewrites each changed file atomically (a new file renamed into place), never in
place: a crash mid-purge leaves every file whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.privacy.releases import purge_folder
from pipeline.release import build


def _release(d: Path) -> None:
    (d / "aligned").mkdir(parents=True)
    (d / "metadata").mkdir()
    for t in ("S1_t01", "S10_t01"):
        np.savez(d / "aligned" / f"{t}.npz", frames=np.zeros((2, 4, 4, 3), np.uint8))
    pd.DataFrame(
        {"take_id": ["S1_t01", "S10_t01"], "aligned_file": ["aligned/S1_t01.npz", "aligned/S10_t01.npz"]}
    ).to_csv(d / "metadata" / "takes.csv", index=False)
    (d / "metadata" / "splits.json").write_text(json.dumps({"train": ["S1_t01", "S10_t01"]}))
    (d / "metadata" / "notes.txt").write_text("S1_t01 blurred\nS10_t01 fine\n")
    (d / "README.md").write_text("# ds\n")
    (d / "CHANGELOG.md").write_text("# changes\n")
    (d / "croissant.json").write_text(
        json.dumps({"distribution": [{"contentUrl": "metadata/takes.csv", "sha256": "0"}]})
    )
    build.write_sums(d)


def test_the_release_purge_replaces_files_instead_of_writing_them_in_place(tmp_path: Path) -> None:
    d = tmp_path / "ds-1.0.0"
    _release(d)
    changed = [
        "metadata/takes.csv",
        "metadata/splits.json",
        "metadata/notes.txt",
        "README.md",
        "CHANGELOG.md",
        "croissant.json",
        "SHA256SUMS",
    ]
    inodes = {rel: (d / rel).stat().st_ino for rel in changed}
    assert purge_folder(d, {"S1", "S1_t01"}, "2026-11-25") == 1
    assert [rel for rel in changed if (d / rel).stat().st_ino == inodes[rel]] == []  # each one renamed into place
    assert list(pd.read_csv(d / "metadata/takes.csv")["take_id"]) == ["S10_t01"]
    assert (d / "metadata/notes.txt").read_text() == "S10_t01 fine\n" and "1 takes removed" in (
        d / "CHANGELOG.md"
    ).read_text()
    assert sorted(p.name for p in d.rglob("*") if ".tmp" in p.name) == []
