"""The capture and capture_verify shells: outputs through the layout, provenance, and the two kinds of fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.capture.simulate import Performance, render_performance, simulate
from pipeline.capture.stage import run as capture_stage
from pipeline.capture.verify import verify_take
from pipeline.capture.verify_stage import run as verify_stage
from pipeline.errors import EnvironmentFault
from pipeline.layout import Layout
from pipeline.parallel import Executor
from pipeline.params import CaptureParams, Params
from pipeline.stage import invoke
from tests.align.project import Project
from tests.conftest import tiny_capture_params


def _full_disk_on_the_second(p: CaptureParams, perf: Performance, takes_dir: Path, truth_dir: Path):
    """The disk fills up while the second performance is written (runs in a spawned worker)."""
    if perf.index == 1:
        raise OSError(28, "No space left on device", str(truth_dir / "x.npz"))
    return render_performance(p, perf, takes_dir, truth_dir)


def test_a_full_disk_stops_the_capture_and_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    p = tiny_capture_params(n_subjects=1, expressions=["happiness"], illuminations=["frontal", "left"])
    with pytest.raises(EnvironmentFault, match="No space left on device"):
        simulate(p, out, Executor("local", 2), render=_full_disk_on_the_second)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no half capture, no temp folder left


def test_the_capture_shell_writes_raw_and_report_through_the_layout(
    layout: Layout, params: Params, tiny_raw: Path
) -> None:
    tiny = params.model_copy(update={"capture": tiny_capture_params(workers=1)})
    assert invoke(capture_stage, layout, tiny) == 0
    assert (layout.raw / "capture_log.csv").read_bytes() == (tiny_raw / "capture_log.csv").read_bytes()
    report = json.loads(layout.capture_report.read_text())
    assert report["n_takes"] == 16 and report["provenance"]["params"]["capture"]["seed"] == 7


def test_verification_scores_aligns_detections_and_skips_a_take_it_cannot_verify(aligned_project: Project) -> None:
    raw, layout = aligned_project.raw, aligned_project.layout
    (raw / "_truth" / "pf00000-cam_c.npz").unlink()
    (layout.aligned / "pf00001-cam_r30.npz").unlink()  # as for a take ingest quarantined
    every = aligned_project.params.capture_verify.model_copy(update={"every_nth_frame": 8})
    p = aligned_project.params.model_copy(update={"capture_verify": every})
    assert invoke(verify_stage, layout, p) == 0
    report = json.loads(layout.capture_verify_report.read_text())
    assert list(report["skipped"]) == ["pf00000-cam_c", "pf00001-cam_r30"]
    assert "No such file" in report["skipped"]["pf00000-cam_c"]
    assert "not aligned" in report["skipped"]["pf00001-cam_r30"]
    assert report["overall"]["all"]["frames"] == 14  # frame 0 (always a detector frame) of the other 14 takes
    assert report["overall"]["all"]["detection_rate"] > 0.5
    assert report["detector"]["detections_from"] == "align" and report["detector"]["name"] == "mtcnn"
    assert report["provenance"]["params"]["capture_verify.every_nth_frame"] == 8


def test_verification_counts_the_frames_align_ran_the_detector_on(aligned_project: Project) -> None:
    """Every 4th frame of 8 is frames 0 and 4; a frame align only tracked is not a verified frame."""
    layout = aligned_project.layout
    assert invoke(verify_stage, layout, aligned_project.params) == 0
    report = json.loads(layout.capture_verify_report.read_text())
    detector_frames = 0
    for f in sorted(layout.aligned.glob("*.npz")):
        with np.load(f) as a:
            detector_frames += int((a["n_faces"][::4] >= 0).sum())
    assert report["overall"]["all"]["frames"] == detector_frames >= 16
    assert detector_frames + report["detector"]["sampled_frames_align_only_tracked"] == 16 * 2
    assert report["skipped"] == {}


def test_verification_without_aligned_takes_is_one_line_exit_1(layout: Layout, params: Params, tiny_raw: Path) -> None:
    assert invoke(verify_stage, layout, params, raw=str(tiny_raw)) == 1


def test_a_missing_raw_folder_is_one_line_exit_1(layout: Layout, params: Params, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)
    assert invoke(verify_stage, layout, params, raw=str(tmp_path / "nothing")) == 1


class _OutOfMemory:
    """A file whose read fails for lack of memory (np.load reads file-like objects too)."""

    def read(self, *args: object) -> bytes:
        raise OSError(12, "Cannot allocate memory")


def test_verification_stops_on_a_fault_of_the_machine(tiny_raw: Path) -> None:
    job = (_OutOfMemory(), tiny_raw / "_truth" / "pf00000-cam_c.npz", 4)
    with pytest.raises(EnvironmentFault, match="Cannot allocate memory"):
        verify_take(job)  # type: ignore[arg-type]
