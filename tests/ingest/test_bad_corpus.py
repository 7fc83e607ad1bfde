"""Ingest against a corpus of bad inputs the test builds itself: each ends quarantined with its own
reason, and every file and every log row is accounted for."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.ingest.run import ingest
from pipeline.params import Params

# take_id (or path, for files without a log row) -> the reason code it must carry
EXPECTED: dict[str, str] = {
    "pf00000-cam_c": "truncated",
    "pf00000-cam_r30": "empty_file",
    "pf00001-cam_c": "not_a_video",
    "pf00001-cam_r30": "fps_mismatch",
    "pf00002-cam_r30": "bad_value",            # illumination 'sunset'
    "pf00003-cam_c": "non_portable_name",      # renamed to a non-ASCII file name
    "pf00003-cam_r30": "path_escape",          # file = ../outside.mp4
    "pf00004-cam_c": "unknown_subject",
    "pf00005-cam_c": "consent_withdrawn",
    "pf09999-cam_c": "duplicate_content",      # a second log row for a byte copy of pf00002-cam_c
    "pf08888-cam_c": "missing_file",           # a log row whose file does not exist
    "pf07777-cam_c": "out_of_bounds",          # a real video at 2 fps, below the fps bound
    "takes/stray.mp4": "orphan_file",          # a file with no log row
    "takes/pf00003-cam_r30.mp4": "orphan_file",  # its row now points elsewhere
    "takes/link.mp4": "path_escape",           # symlink leading out of the raw folder
}
UNTOUCHED = ["pf00002-cam_c", "pf00004-cam_r30", "pf00005-cam_r30", "pf00006-cam_c", "pf00006-cam_r30", "pf00007-cam_c", "pf00007-cam_r30"]


def _write_video(path: Path, fps: float, n: int = 8, size: int = 96) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    for i in range(n):
        w.write(np.full((size, size, 3), 30 * i % 255, np.uint8))
    w.release()


def build_corpus(raw: Path) -> None:
    """Damage a copy of a good capture in every way the rig (or a person) might."""
    takes = raw / "takes"
    log = pd.read_csv(raw / "capture_log.csv", dtype=str, keep_default_na=False)
    row = {t: i for i, t in enumerate(log["take_id"])}

    data = (takes / "pf00000-cam_c.mp4").read_bytes()
    (takes / "pf00000-cam_c.mp4").write_bytes(data[: len(data) // 2])
    (takes / "pf00000-cam_r30.mp4").write_bytes(b"")
    (takes / "pf00001-cam_c.mp4").write_text("this is a note, not a video\n" * 40)
    log.loc[row["pf00001-cam_r30"], "fps"] = "25"
    log.loc[row["pf00002-cam_r30"], "illumination"] = "sunset"
    (takes / "pf00003-cam_c.mp4").rename(takes / "pf00003-cäm_c.mp4")
    log.loc[row["pf00003-cam_c"], "file"] = "takes/pf00003-cäm_c.mp4"
    (raw.parent / "outside.mp4").write_bytes((takes / "pf00006-cam_c.mp4").read_bytes())
    log.loc[row["pf00003-cam_r30"], "file"] = "../outside.mp4"
    log.loc[row["pf00004-cam_c"], "subject_id"] = "sub-nobody"
    log.loc[row["pf00005-cam_c"], "subject_id"] = "sub-gone"
    subjects = pd.read_csv(raw / "subjects.csv", dtype=str, keep_default_na=False)
    gone = {"subject_id": "sub-gone", "consent_research": "true", "consent_public_release": "true",
            "withdrawn": "true", "consent_date": "2026-02-23", "withdrawn_date": "2026-05-01"}
    pd.concat([subjects, pd.DataFrame([gone])]).to_csv(raw / "subjects.csv", index=False)

    shutil.copy(takes / "pf00002-cam_c.mp4", takes / "pf09999-cam_c.mp4")
    extra = []
    dup = log.loc[row["pf00002-cam_c"]].copy()
    dup["take_id"], dup["file"], dup["recorded_at"] = "pf09999-cam_c", "takes/pf09999-cam_c.mp4", "2026-12-01T10:00:00+00:00"
    extra.append(dup)
    orphan_row = log.loc[row["pf00006-cam_c"]].copy()
    orphan_row["take_id"], orphan_row["file"] = "pf08888-cam_c", "takes/pf08888-cam_c.mp4"
    extra.append(orphan_row)
    _write_video(takes / "pf07777-cam_c.mp4", fps=2.0)
    slow = log.loc[row["pf00006-cam_c"]].copy()
    slow["take_id"], slow["file"], slow["fps"] = "pf07777-cam_c", "takes/pf07777-cam_c.mp4", "2"
    extra.append(slow)
    log = pd.concat([log, pd.DataFrame(extra)], ignore_index=True)
    log.to_csv(raw / "capture_log.csv", index=False)

    shutil.copy(takes / "pf00006-cam_r30.mp4", takes / "stray.mp4")
    (takes / "link.mp4").symlink_to(raw.parent / "outside.mp4")


@pytest.fixture
def corpus(raw_copy: Path, params: Params) -> tuple[pd.DataFrame, dict, Path]:
    build_corpus(raw_copy)
    manifest, report = ingest(params, raw_copy)
    return manifest, report, raw_copy


def _entry(manifest: pd.DataFrame, key: str) -> pd.Series:
    hit = manifest[(manifest["take_id"] == key) | (manifest["take_id"].isna() & (manifest["path"] == key))]
    assert len(hit) == 1, f"{key}: expected exactly one manifest row, found {len(hit)}"
    return hit.iloc[0]


@pytest.mark.parametrize("key,code", sorted(EXPECTED.items()))
def test_each_bad_input_is_quarantined_with_its_reason(corpus, key: str, code: str) -> None:
    manifest, _, _ = corpus
    e = _entry(manifest, key)
    assert e["status"] == "quarantined"
    assert code in e["reason_codes"].split(","), e["reason"]
    assert e["reason"]


def test_good_takes_are_accepted_with_probed_metadata(corpus) -> None:
    manifest, _, raw = corpus
    for take in UNTOUCHED:
        e = _entry(manifest, take)
        assert e["status"] == "accepted", e["reason"]
        assert e["n_frames"] == 8 and e["width"] == 96 and e["height"] == 96
        assert e["duration_s"] == pytest.approx(0.8)
        assert len(e["sha256"]) == 64


def test_nothing_is_lost_and_the_counts_add_up(corpus) -> None:
    manifest, report, raw = corpus
    log_rows = len(pd.read_csv(raw / "capture_log.csv"))
    files = sorted(p.relative_to(raw).as_posix() for p in (raw / "takes").iterdir())
    assert report["log_rows"] == log_rows == int(manifest["log_line"].notna().sum())
    listed = manifest["path"].dropna().tolist()
    for f in files:
        assert listed.count(f) == 1, f"{f} listed {listed.count(f)} times"
    assert report["accepted"] + report["quarantined"] == report["manifest_rows"] == len(manifest)
    assert report["manifest_rows"] == log_rows + report["orphan_files"]
    assert report["accounting"]["adds_up"] is True
    assert len(report["quarantined_items"]) == report["quarantined"]
    assert report["accepted"] == len(UNTOUCHED)


def test_reasons_name_the_file_line_and_field(corpus) -> None:
    manifest, _, _ = corpus
    bad_enum = _entry(manifest, "pf00002-cam_r30")["reason"]
    assert "capture_log.csv line" in bad_enum and "field 'illumination'" in bad_enum and "'sunset'" in bad_enum
    assert "25" in _entry(manifest, "pf00001-cam_r30")["reason"]
    assert "same bytes" in _entry(manifest, "pf09999-cam_c")["reason"] and "pf00002-cam_c" in _entry(manifest, "pf09999-cam_c")["reason"]


def test_the_escaping_path_is_never_opened(corpus) -> None:
    manifest, _, _ = corpus
    e = _entry(manifest, "pf00003-cam_r30")
    assert pd.isna(e["sha256"]) and pd.isna(e["n_frames"])


def test_manifest_round_trips_through_parquet(corpus, tmp_path: Path) -> None:
    manifest, _, _ = corpus
    manifest.to_parquet(tmp_path / "m.parquet", index=False)
    back = pd.read_parquet(tmp_path / "m.parquet")
    assert "takes/pf00003-cäm_c.mp4" in set(back["path"])
    assert len(back) == len(manifest)
