"""Consent filtering, reproducible archives, and verification of releases (unit level)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.consent import parse_rows
from pipeline.release import build
from pipeline.release.verify import verify


def _manifest() -> pd.DataFrame:
    rows = []
    for sid in ("sub-a", "sub-b", "sub-c", "sub-d", "sub-e"):
        for k in range(2):
            rows.append(
                {
                    "take_id": f"{sid}-{k}",
                    "subject_id": sid,
                    "status": "accepted",
                    "session": "ses-01",
                    "camera": "cam_c",
                    "yaw": 0.0,
                    "pitch": 0.0,
                    "illumination": "frontal",
                    "prompted_expression": "fear",
                    "fps": 10.0,
                    "n_frames": 8,
                    "sha256": "0" * 64,
                    "path": f"takes/{sid}-{k}.mp4",
                }
            )
    rows.append(dict(rows[0], take_id="bad-0", status="quarantined"))
    return pd.DataFrame(rows)


CONSENT = parse_rows(
    [
        (i + 2, {"subject_id": s, "consent_research": r, "consent_public_release": p, "withdrawn": w})
        for i, (s, r, p, w) in enumerate(
            [
                ("sub-a", "true", "true", "false"),
                ("sub-b", "true", "true", "true"),
                ("sub-c", "true", "false", "false"),
                ("sub-d", "false", "true", "false"),
            ]
        )
    ],
    Path("subjects.csv"),
)


def test_only_consenting_subjects_are_released_and_exclusions_are_counted_without_names() -> None:
    m = _manifest()
    align = pd.DataFrame({"take_id": m["take_id"], "status": "ok"})
    sel = build.select_takes(m, CONSENT, align)
    assert set(sel.takes["subject_id"]) == {"sub-a"}
    # sub-b withdrew although its takes were accepted at ingest
    assert sel.excluded == {
        "not_accepted_by_ingest": 1,
        "consent_withdrawn": 2,
        "no_public_release_consent": 2,
        "no_research_consent": 2,
        "unknown_subject": 2,
    }
    assert sel.subjects_excluded == {
        "consent_withdrawn": 1,
        "no_public_release_consent": 1,
        "no_research_consent": 1,
        "unknown_subject": 1,
    }
    assert "sub-b" not in str(sel.excluded) + str(sel.subjects_excluded)


def test_withdrawn_subject_disappears_from_every_split_fold() -> None:
    split = {
        "protocol": "p",
        "folds": [
            {"fold": 0, "subjects": {"train": ["sub-a", "sub-b"]}, "train": ["sub-a-0", "sub-b-0"], "test": ["sub-b-1"]}
        ],
    }
    out = build.filter_split(split, {"sub-a-0"})
    assert (
        out["folds"][0]["train"] == ["sub-a-0"] and out["folds"][0]["test"] == [] and "subjects" not in out["folds"][0]
    )


def _release_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ds-1.0.0"
    (d / "aligned").mkdir(parents=True)
    (d / "metadata").mkdir()
    for t in ("x", "y"):
        np.savez(d / "aligned" / f"{t}.npz", frames=np.full((2, 4, 4, 3), ord(t), np.uint8))
    pd.DataFrame({"take_id": ["x", "y"], "aligned_file": ["aligned/x.npz", "aligned/y.npz"]}).to_csv(
        d / "metadata" / "takes.csv", index=False
    )
    (d / "README.md").write_text("hello\n")
    build.write_sums(d)
    return d


def test_archive_is_byte_identical_across_builds(tmp_path: Path) -> None:
    d = _release_dir(tmp_path)
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    build.deterministic_tar(d, a, epoch=1_700_000_000)
    (d / "README.md").touch()  # a new mtime on disk must not change the archive
    build.deterministic_tar(d, b, epoch=1_700_000_000)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    import tarfile

    with tarfile.open(a) as tar:
        names = tar.getnames()
        assert names == sorted(names) and all(m.uid == 0 and m.mtime == 1_700_000_000 for m in tar.getmembers())


def test_verify_passes_a_good_release_folder_and_archive(tmp_path: Path) -> None:
    d = _release_dir(tmp_path)
    assert verify(d)["ok"]
    build.deterministic_tar(d, tmp_path / "r.tar.gz", 0)
    res = verify(tmp_path / "r.tar.gz")
    assert res["ok"] and res["checked"] == 4


@pytest.mark.parametrize(
    "damage,kind,name",
    [
        (lambda d: (d / "aligned" / "x.npz").write_bytes(b"tampered"), "altered", "aligned/x.npz"),
        (lambda d: (d / "README.md").unlink(), "missing", "README.md"),
        (lambda d: (d / "notes.txt").write_text("sneaked in"), "extra", "notes.txt"),
    ],
)
def test_verify_names_tampered_missing_and_extra_files(tmp_path: Path, damage, kind: str, name: str) -> None:
    d = _release_dir(tmp_path)
    damage(d)
    res = verify(d)
    assert not res["ok"] and res[kind] == [name]
    build.deterministic_tar(d, tmp_path / "r.tar.gz", 0)
    assert verify(tmp_path / "r.tar.gz")[kind] == [name]


def test_verify_checks_the_take_table_against_the_aligned_files(tmp_path: Path) -> None:
    d = _release_dir(tmp_path)
    (d / "aligned" / "y.npz").unlink()
    pd.DataFrame({"take_id": ["x", "y"], "aligned_file": ["aligned/x.npz", "aligned/y.npz"]}).to_csv(
        d / "metadata" / "takes.csv", index=False
    )
    build.write_sums(d)  # checksums rewritten to match: only the manifest check can catch it
    res = verify(d)
    assert not res["ok"] and res["manifest_problems"] == ["aligned/y.npz is listed in metadata/takes.csv but absent"]


def test_versions_must_be_semantic() -> None:
    assert build.parse_version("0.10.1") == (0, 10, 1)
    with pytest.raises(ValueError, match="X.Y.Z"):
        build.parse_version("1.0")
