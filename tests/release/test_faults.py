"""The release stage tells a fault of the machine from a fault of an input.

A full disk while writing the release stops the stage (exit 2, one line) with nothing renamed into
`release/` and no report; the failing write is injected (`copy`), no disk is filled. A damaged
aligned file (an input) is one line and exit 1: see test_stage.py and test_verify.py.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from pipeline.errors import EnvironmentFault
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.release import stage
from pipeline.stage import EXIT_ENVIRONMENT, invoke
from tests.release import fake_project


def _disk_full_after(n: int):
    """A copy that fills the disk after `n` files, as shutil.copyfile fails on a full filesystem."""
    done: list[Path] = []

    def copy(src: Path, dst: Path) -> None:
        if len(done) >= n:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        Path(dst).write_bytes(Path(src).read_bytes())
        done.append(Path(dst))

    return copy


def test_a_full_disk_stops_the_core_and_publishes_nothing(layout: Layout, params: Params) -> None:
    fake_project.make(layout.root)
    inputs = stage.read_inputs(layout, layout.raw)
    with pytest.raises(EnvironmentFault) as e:
        stage.build_release(
            inputs,
            params.release,
            "0.1.0",
            False,
            layout.release,
            layout.stage_tmp("release"),
            copy=_disk_full_after(5),
        )
    assert "\n" not in str(e.value) and "No space left on device" in str(e.value) and "mvfer-sim-0.1.0" in str(e.value)
    assert not layout.release.exists() and not layout.stage_tmp("release").exists()


def test_a_full_disk_is_exit_2_in_one_line_and_nothing_is_recorded(
    layout: Layout, params: Params, caplog: pytest.LogCaptureFixture
) -> None:
    fake_project.make(layout.root)
    fake_project.build_release(layout.root)  # an earlier, complete release stays as it was
    before = fake_project.tree_digest(layout.release)
    layout.release_report.unlink()
    fake_project.set_release(layout.root, version="0.2.0")
    with caplog.at_level(logging.ERROR):
        rc = invoke(stage.run, layout, fake_project.params_of(layout.root), copy=_disk_full_after(3))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert rc == EXIT_ENVIRONMENT and len(errors) == 1 and "\n" not in errors[0].getMessage()
    assert "No space left on device" in errors[0].getMessage() and "Traceback" not in caplog.text
    assert fake_project.tree_digest(layout.release) == before  # nothing renamed into release/
    assert not layout.release_report.exists() and not layout.stage_tmp("release").exists()
