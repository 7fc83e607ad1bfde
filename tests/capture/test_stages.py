"""The capture and capture_verify shells: outputs through the layout, provenance, and the two kinds of fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def test_verification_skips_a_take_it_cannot_verify_and_goes_on(layout: Layout, params: Params, raw_copy: Path) -> None:
    (raw_copy / "_truth" / "pf00000-cam_c.npz").unlink()
    every = params.capture_verify.model_copy(update={"every_nth_frame": 8})
    p = params.model_copy(update={"capture_verify": every, "capture": tiny_capture_params(workers=2)})
    assert invoke(verify_stage, layout, p, raw=str(raw_copy)) == 0
    report = json.loads(layout.capture_verify_report.read_text())
    assert list(report["skipped"]) == ["pf00000-cam_c"] and "No such file" in report["skipped"]["pf00000-cam_c"]
    assert report["overall"]["all"]["frames"] == 15  # one sampled frame in each of the other 15 takes
    assert report["overall"]["all"]["detection_rate"] > 0.5
    assert report["provenance"]["params"]["capture_verify"]["every_nth_frame"] == 8


def test_a_missing_raw_folder_is_one_line_exit_1(layout: Layout, params: Params, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)
    assert invoke(verify_stage, layout, params, raw=str(tmp_path / "nothing")) == 1


class _OutOfMemory:
    """A truth file whose read fails for lack of memory (np.load reads file-like objects too)."""

    def read(self, *args: object) -> bytes:
        raise OSError(12, "Cannot allocate memory")


def test_verification_stops_on_a_fault_of_the_machine(params: Params, tiny_raw: Path) -> None:
    job = (tiny_raw / "takes" / "pf00000-cam_c.mp4", _OutOfMemory(), 8, params.capture_verify)
    with pytest.raises(EnvironmentFault, match="Cannot allocate memory"):
        verify_take(job)  # type: ignore[arg-type]
