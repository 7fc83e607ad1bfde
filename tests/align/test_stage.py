"""The align stage: incremental, flags bad takes and goes on, Dask equals local, clear detector errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.align import stage
from pipeline.align.detectors import DETECTORS, make_detector
from pipeline.align.detectors.insightface import InsightFaceDetector, InsightFacePackError
from pipeline.registry import UnknownNameError
from pipeline.stage import invoke
from tests.align.project import Project


def test_second_run_does_nothing_and_one_new_take_is_one_job(project: Project) -> None:
    first = project.run()
    assert first["takes_processed"] == 16 and first["takes_up_to_date"] == 0
    assert first["provenance"]["params"]["align"]["detector"] == "mtcnn"
    assert "weights_sha256" in first["provenance"]["aligned_with"]
    assert project.run()["takes_processed"] == 0
    # a new take arrives: copy one video under a new id with its own log row
    raw = project.raw
    log = pd.read_csv(raw / "capture_log.csv")
    row = log.iloc[0].copy()
    row["take_id"], row["file"] = "pf00100-cam_c", "takes/pf00100-cam_c.mp4"
    data = (raw / log.iloc[0]["file"]).read_bytes()
    (raw / row["file"]).write_bytes(data + b"\0" * 8)  # different bytes, same frames
    pd.concat([log, row.to_frame().T]).to_csv(raw / "capture_log.csv", index=False)
    project.reingest()
    again = project.run()
    assert again["takes_processed"] == 1 and again["takes_up_to_date"] == 16


def test_parameter_change_redoes_all_and_removed_take_loses_its_output(project: Project) -> None:
    project.run()
    assert project.run(keyframe_every=2)["takes_processed"] == 16
    log = pd.read_csv(project.raw / "capture_log.csv")
    gone = log.iloc[-1]["take_id"]
    log.iloc[:-1].to_csv(project.raw / "capture_log.csv", index=False)
    (project.raw / log.iloc[-1]["file"]).unlink()
    project.reingest()
    rep = project.run(keyframe_every=2)
    assert rep["outputs_removed"] == 1 and rep["takes_processed"] == 0
    assert not (project.out / f"{gone}.npz").exists()


def test_outputs_and_tables(project: Project) -> None:
    project.run()
    with np.load(project.out / "pf00000-cam_c.npz") as z:
        assert z["frames"].shape == (8, 112, 112, 3) and z["frames"].dtype == np.uint8
        assert z["points"].shape == (8, 5, 2) and z["valid"].all()
    qc = pd.read_parquet(project.layout.frames_qc)
    assert len(qc) == 16 * 8
    assert {"score", "blur", "brightness", "iod_px", "yaw_est", "jitter", "source"} <= set(qc.columns)
    takes = project.takes()
    assert set(takes["status"]) <= {"ok", "flagged"} and len(takes) == 16
    assert not list(project.out.glob(".*tmp*")), "temporary files left behind"
    assert not project.layout.stage_tmp("align").exists()


def test_corrupt_video_mid_stream_is_flagged_and_the_stage_goes_on(project: Project) -> None:
    """A fault of one input: the file goes bad after ingest accepted it (ingest itself quarantines such files)."""
    victim = project.raw / "takes" / "pf00001-cam_c.mp4"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    rep = project.run()
    takes = project.takes()
    assert rep["takes"] == 16 and rep["takes_processed"] == 16  # every other take was processed
    t = takes.loc["pf00001-cam_c"]
    assert t["status"] == "flagged" and "decode_stopped" in t["reason_codes"], t["reason"]
    assert (takes.drop("pf00001-cam_c")["decoded_frames"] == 8).all()


def test_a_take_that_is_no_video_is_flagged_align_failed_and_the_stage_goes_on(project: Project) -> None:
    victim = project.raw / "takes" / "pf00003-cam_c.mp4"
    victim.write_bytes(b"not a video at all")
    rep = project.run()
    takes = project.takes()
    assert rep["takes"] == 16 and rep["takes_ok"] + rep["takes_flagged"] == 16
    assert takes.loc["pf00003-cam_c", "status"] == "flagged"
    assert (takes.drop("pf00003-cam_c")["decoded_frames"] == 8).all()


def test_dask_local_cluster_gives_identical_outputs(project: Project, tmp_path: Path) -> None:
    local = project.run(workers=2)  # the spawn pool
    assert local["takes_processed"] == 16 and local["executor"] == "local"
    good = project.aligned_bytes()
    shutil.rmtree(project.out)
    rep = project.run(executor="dask", workers=2)
    assert rep["takes_processed"] == 16 and rep["executor"] == "dask"
    assert project.aligned_bytes() == good


def test_the_registry_lists_the_detectors_and_an_unknown_name_is_one_line_naming_the_key(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    assert DETECTORS.names() == ["insightface", "mtcnn"]
    with pytest.raises(
        UnknownNameError, match=r"align\.detector: unknown detector 'retinaface' \(known: insightface, mtcnn\)"
    ):
        make_detector("retinaface")
    with caplog.at_level(logging.ERROR):
        assert invoke(stage.run, project.layout, project.with_align(detector="retinaface")) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "align.detector" in errors[0] and "\n" not in errors[0]
    assert not project.out.exists() and not project.layout.align_report.exists()  # failed before any work


def test_missing_insightface_pack_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MVFER_INSIGHTFACE_PACK", raising=False)
    missing = tmp_path / "buffalo_l"
    with pytest.raises(InsightFacePackError) as e:
        InsightFaceDetector(pack=missing)
    msg = str(e.value)
    assert str(missing) in msg and "align.insightface_pack" in msg and "\n" not in msg
    missing.mkdir()
    with pytest.raises(InsightFacePackError, match="holds no detector"):
        InsightFaceDetector(pack=missing)
    with pytest.raises(InsightFacePackError, match="no insightface pack configured"):
        InsightFaceDetector(pack="")


def test_broken_insightface_pack_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MVFER_INSIGHTFACE_PACK", raising=False)
    pack = tmp_path / "buffalo_l"
    pack.mkdir()
    (pack / "det_10g.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(InsightFacePackError) as e:
        InsightFaceDetector(pack=pack)
    assert "cannot load" in str(e.value) and "det_10g.onnx" in str(e.value) and "\n" not in str(e.value)


def test_stage_reports_a_missing_pack_in_one_line_exit_1(
    project: Project, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MVFER_INSIGHTFACE_PACK", raising=False)
    p = project.with_align(detector="insightface", insightface_pack=str(project.layout.root / "nowhere"))
    with caplog.at_level(logging.ERROR):
        assert invoke(stage.run, project.layout, p) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "nowhere" in errors[0] and "\n" not in errors[0]
    assert not project.layout.align_takes.exists()
