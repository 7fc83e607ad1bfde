"""A killed release build (`python -m pipeline.release.stage`, as `dvc repro` and `mvfer release build`
run it) leaves nothing inside release/ and a rerun gives the same bytes."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from pipeline.layout import Layout
from tests.release import fake_project

NAME = "mvfer-sim-0.1.0"


def _tmp_root(root: Path) -> Path:
    return Layout(root).stage_tmp("release")


def _wait_and_kill(proc, ready, timeout: float = 120) -> bool:
    """SIGKILL `proc` as soon as `ready()` holds; False if the build finished first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("build neither reached the kill point nor finished")


def _aligned_copied(root: Path):
    d = _tmp_root(root) / NAME / "aligned"
    return lambda: d.is_dir() and sum(1 for _ in d.iterdir()) > 20


def _archiving(root: Path):
    t = _tmp_root(root)
    return lambda: t.is_dir() and any(p.name.endswith(".tmp.tar.gz") and p.stat().st_size > 0 for p in t.iterdir())


@pytest.mark.integration
@pytest.mark.parametrize("kill_point", [_aligned_copied, _archiving])
def test_kill_9_mid_build_then_rerun_gives_the_same_bytes(tmp_path: Path, kill_point) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    fake_project.make(root, n_subjects=8, per_subject=40, frames=(8, 32, 32, 3))
    fake_project.run_stage(root)
    reference = fake_project.tree_digest(root / "release")
    report = (root / "reports" / "release.json").read_bytes()

    # an older build (before this fix) left hidden copies inside release/: they must go too
    stale = root / "release" / f".{NAME}.k3j2.tmp"
    (stale / "aligned").mkdir(parents=True)
    (stale / "aligned" / "leak.npz").write_bytes(b"a withdrawn subject's take")
    (root / "release" / f".{NAME}.tar.gz.x1.tmp.tar.gz").write_bytes(b"partial")

    proc = fake_project.popen_stage(root)
    assert _wait_and_kill(proc, kill_point(root)), "the build finished before the kill point: make the fixture bigger"
    assert proc.returncode == -signal.SIGKILL
    # the killed build removed the old leftovers when it started and put nothing temporary in release/
    assert sorted(p.name for p in (root / "release").iterdir()) == [NAME, f"{NAME}.tar.gz"]
    assert fake_project.tree_digest(root / "release") == reference  # the complete older build is untouched

    fake_project.run_stage(root)
    assert fake_project.tree_digest(root / "release") == reference
    assert (root / "reports" / "release.json").read_bytes() == report
    assert not _tmp_root(root).exists()
