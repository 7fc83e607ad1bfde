"""A fault of one take flags that take and the stage goes on; a fault of the machine (disk full, a lost
Dask scheduler) stops the stage with one line, records nothing as done, keeps the finished takes, and a
rerun completes."""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.align import stage
from pipeline.align.provenance import provenance
from pipeline.errors import EnvironmentFault
from pipeline.stage import invoke
from pipeline.utils import io
from tests.align.project import REPO, Project, align_cmd, child_env

FAIL_FROM = "pf00002-cam_c"  # the 5th take in take_id order


def failing_writer(dest: Path, arrays: Any, tmp_dir: Path | None = None, *, first: str, exc: str) -> str:
    """io.write_npz until the take `first` (in take_id order), then the error `exc` for it and every later take."""
    if Path(dest).stem >= first:
        if exc == "ENOSPC":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))
        raise RuntimeError("simulated failure\nsecond line")
    return io.write_npz(dest, arrays, tmp_dir=tmp_dir)


def _core(project: Project, **align: Any):
    a = project.with_align(**align).align
    manifest = pd.read_parquet(project.layout.manifest)
    return partial(
        stage.align,
        manifest,
        project.raw,
        project.out,
        project.layout.stage_tmp("align"),
        a,
        provenance(a.detector, a.insightface_pack),
    )


def _complete(project: Project) -> list[str]:
    return sorted(p.stem for p in project.out.glob("*.npz") if io.npz_problem(p) is None)


def test_a_take_that_fails_is_flagged_with_its_reason_and_the_stage_goes_on(project: Project, caplog) -> None:
    writer = partial(failing_writer, first="pf00006-cam_r30", exc="RuntimeError")  # the last 3 takes
    with caplog.at_level("WARNING"):
        qc, takes, rep = _core(project)(write=writer)
    takes = takes.set_index("take_id")
    failed = sorted(t for t in takes.index if t >= "pf00006-cam_r30")
    assert len(failed) == 3 and rep["takes"] == 16
    assert (takes.loc[failed, "reason_codes"] == "align_failed").all()
    assert rep["take_errors"] == [(t, "RuntimeError: simulated failure") for t in failed]
    assert (takes.drop(failed)["status"] == "ok").all()
    assert not project.layout.stage_tmp("align").exists(), "temp files left behind"


def test_a_full_disk_in_a_worker_stops_the_stage_keeps_finished_takes_and_the_rerun_completes(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    """ENOSPC raised in the spawn pool's worker: no take is flagged, the map stops with one line."""
    writer = partial(failing_writer, first=FAIL_FROM, exc="ENOSPC")
    with pytest.raises(EnvironmentFault) as e:
        _core(project, workers=2)(write=writer)
    msg = str(e.value)
    assert "No space left on device" in msg and FAIL_FROM in msg and "\n" not in msg, msg
    kept = _complete(project)
    assert kept and all(t < FAIL_FROM for t in kept) and FAIL_FROM not in kept
    assert not project.layout.align_takes.exists() and not project.layout.align_report.exists()
    rep = project.run()  # the disk has space again
    assert rep["takes_processed"] == 16 - len(kept) and rep["takes_up_to_date"] == len(kept)
    assert rep["takes_ok"] + rep["takes_flagged"] == 16 and rep["take_errors"] == []


def _limit_file_size(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_the_shell_over_the_file_size_limit_exits_2_in_one_line_and_records_nothing(project: Project) -> None:
    """`python -m pipeline.align.stage` with RLIMIT_FSIZE below one take's frames: EFBIG, exit 2."""
    root = project.layout.root
    proc = subprocess.run(
        align_cmd(),
        cwd=root,
        env=child_env(root),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=partial(_limit_file_size, 100_000),
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "File too large" in ln]
    assert len(errors) == 1 and "environment" in errors[0] and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for out in (project.layout.align_takes, project.layout.frames_qc, project.layout.align_report):
        assert not out.exists(), out
    rep = project.run()
    assert rep["takes_processed"] == 16 and rep["takes_ok"] + rep["takes_flagged"] == 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(args: list[str]) -> subprocess.Popen:
    env = child_env(REPO) | {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.integration
def test_a_dask_scheduler_that_dies_mid_run_ends_in_one_line_keeping_finished_takes(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    """A real `dask scheduler` and `dask worker` on 127.0.0.1; the scheduler is killed after two takes."""
    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{_free_port()}"
    scheduler = _spawn(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"]
    )
    worker = _spawn([dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"])
    killed = threading.Event()

    def kill_after_two() -> None:
        deadline = time.monotonic() + 240
        while len(list(project.out.glob("*.npz"))) < 2 and time.monotonic() < deadline and not killed.is_set():
            time.sleep(0.05)
        os.killpg(scheduler.pid, signal.SIGKILL)
        killed.set()

    watcher = threading.Thread(target=kill_after_two, daemon=True)
    try:
        watcher.start()
        t0 = time.monotonic()
        with caplog.at_level(logging.ERROR):
            code = invoke(stage.run, project.layout, project.with_align(executor="dask", dask_scheduler=address))
        seconds = time.monotonic() - t0
    finally:
        killed.set()
        watcher.join(timeout=10)
        _stop(scheduler)
        _stop(worker)
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "lost after" in errors[0] and "of 16" in errors[0] and "rerun" in errors[0] and "align" in errors[0]
    assert seconds < 200
    kept = _complete(project)
    assert len(kept) >= 2 and not list(project.out.glob(".*"))
    for out in (project.layout.align_takes, project.layout.frames_qc, project.layout.align_report):
        assert not out.exists(), out
    rep = project.run()  # the rerun, on the local pool, does only the rest
    assert rep["takes_processed"] == 16 - len(kept) and rep["takes_ok"] + rep["takes_flagged"] == 16
