"""The capture log and consent table: fatal structural errors and per-row value problems."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.ingest.run import ingest
from pipeline.ingest.schema import (
    LOG_REQUIRED,
    CaptureLogError,
    check_relative_path,
    read_consent,
    read_csv_rows,
    validate_log_rows,
)
from pipeline.ingest.stage import run as ingest_stage
from pipeline.layout import Layout
from pipeline.stage import invoke

HEADER = ",".join(LOG_REQUIRED)
GOOD = "t1,sub-a,ses-01,cam_c,0,0,frontal,anger,10,2026-03-02T09:00:00+00:00,takes/t1.mp4"
EXPR = ["neutral", "anger", "happiness"]
ILLUM = ["frontal", "dim"]


def _log(tmp_path: Path, *lines: str) -> Path:
    p = tmp_path / "capture_log.csv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_missing_log_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureLogError, match=r"capture_log\.csv: file not found"):
        read_csv_rows(tmp_path / "capture_log.csv", LOG_REQUIRED)


def test_missing_column_names_line_and_field(tmp_path: Path) -> None:
    p = _log(tmp_path, HEADER.replace(",fps", ""), GOOD.replace(",10,", ","))
    with pytest.raises(CaptureLogError, match=r"line 1, field 'fps'"):
        read_csv_rows(p, LOG_REQUIRED)


def test_ragged_line_names_the_line(tmp_path: Path) -> None:
    p = _log(tmp_path, HEADER, GOOD, "t2,sub-a,ses-01")
    with pytest.raises(CaptureLogError, match=r"line 3: expected 11 fields, found 3"):
        read_csv_rows(p, LOG_REQUIRED)


def test_bad_encoding_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "capture_log.csv"
    p.write_bytes((HEADER + "\n" + GOOD + "\n").encode() + b"t2,sub-\xff\n")
    with pytest.raises(CaptureLogError, match=r"line 3: not valid UTF-8"):
        read_csv_rows(p, LOG_REQUIRED)


def test_empty_log_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureLogError, match="empty"):
        read_csv_rows(_log(tmp_path, ""), LOG_REQUIRED)


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("yaw", "left-ish", "'left-ish' is not a number"),
        ("pitch", "95", "outside [-90, 90]"),
        ("fps", "nan", "outside"),
        ("illumination", "sunset", "'sunset' is not one of frontal, dim"),
        ("prompted_expression", "joy", "'joy' is not one of"),
        ("recorded_at", "yesterday", "not an ISO 8601 time"),
        ("take_id", "t 1", "characters outside"),
        ("subject_id", "", "is empty"),
    ],
)
def test_value_problems_quarantine_the_row_naming_line_and_field(
    tmp_path: Path, field: str, value: str, needle: str
) -> None:
    values = dict(zip(LOG_REQUIRED, GOOD.split(",")))
    values[field] = value
    rows = validate_log_rows([(2, values)], EXPR, ILLUM)
    [row] = rows
    assert len(row.problems) == 1
    assert row.problems[0].code == "bad_value"
    assert f"line 2, field '{field}'" in row.problems[0].message and needle in row.problems[0].message


def test_duplicate_take_ids_quarantine_every_copy(tmp_path: Path) -> None:
    a = dict(zip(LOG_REQUIRED, GOOD.split(",")))
    b = dict(a, file="takes/other.mp4")
    rows = validate_log_rows([(2, a), (5, b)], EXPR, ILLUM)
    assert [p.code for p in rows[0].problems] == ["duplicate_take_id"]
    assert "line(s) 5" in rows[0].problems[0].message and "line(s) 2" in rows[1].problems[0].message


@pytest.mark.parametrize(
    "path,code",
    [
        ("../x.mp4", "path_escape"),
        ("takes/../../x.mp4", "path_escape"),
        ("/etc/passwd", "path_escape"),
        ("takes\\x.mp4", "path_escape"),
        ("takes/tä.mp4", "non_portable_name"),
        ("takes/a b.mp4", "non_portable_name"),
        ("", "bad_value"),
    ],
)
def test_unsafe_paths(path: str, code: str) -> None:
    problem = check_relative_path(path)
    assert problem is not None and problem.code == code


def test_safe_path_passes() -> None:
    assert check_relative_path("takes/pf00001-cam_c.mp4") is None


def test_consent_table_invalid_and_duplicate_records(tmp_path: Path) -> None:
    p = tmp_path / "subjects.csv"
    p.write_text(
        "subject_id,consent_research,consent_public_release,withdrawn\n"
        "sub-a,true,true,false\nsub-b,yes,no,maybe\nsub-c,1,0,0\nsub-c,1,1,0\n"
    )
    good, bad = read_consent(p)
    assert set(good) == {"sub-a"}
    assert "field 'withdrawn'" in bad["sub-b"] and "'maybe'" in bad["sub-b"]
    assert "lines 4 and 5" in bad["sub-c"]


def test_the_stage_reports_a_broken_log_in_one_line_and_fails(
    raw_copy: Path, layout: Layout, params, caplog: pytest.LogCaptureFixture
) -> None:
    (raw_copy / "capture_log.csv").write_text("take_id,subject_id\nx,y\n")
    assert invoke(ingest_stage, layout, params, raw=str(raw_copy)) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "capture_log.csv, line 1, field 'session'" in errors[0]
    assert not layout.manifest.exists() and not layout.ingest_report.exists()


@pytest.mark.parametrize("with_files", [False, True])
def test_a_log_of_only_its_header_gives_an_empty_manifest(
    raw_copy: Path, layout: Layout, params, with_files: bool
) -> None:
    """Was `KeyError: "['mode'] not in index"`: no rows means an empty manifest (files, if any, are orphans)."""
    (raw_copy / "capture_log.csv").write_text(",".join(LOG_REQUIRED) + "\n")
    if not with_files:
        for f in (raw_copy / "takes").iterdir():
            f.unlink()
    assert invoke(ingest_stage, layout, params, raw=str(raw_copy)) == 0
    import pandas as pd

    manifest = pd.read_parquet(layout.manifest)
    assert "mode" in manifest.columns and (manifest["status"] != "accepted").all()
    assert len(manifest) == (16 if with_files else 0)
    report = pd.read_json(layout.ingest_report, typ="series")
    assert report["log_rows"] == 0 and report["accepted"] == 0 and report["orphan_files"] == len(manifest)


def test_missing_raw_folder_is_a_clear_error(params, tmp_path: Path) -> None:
    with pytest.raises(CaptureLogError, match="raw capture folder not found"):
        ingest(params, tmp_path / "nope")


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_log_that_is_not_a_regular_file_is_refused_unopened(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "capture_log.csv"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    with pytest.raises(CaptureLogError, match="not a regular file"):
        read_csv_rows(path, LOG_REQUIRED)  # a FIFO would block here if it were opened
