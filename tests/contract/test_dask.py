"""The parallel map on a Dask cluster: the same results, and a lost scheduler is one line, not a traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import EnvironmentFault
from pipeline.parallel import Executor, pmap
from tests.contract import workers

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_local_cluster_gives_the_local_pool_results() -> None:
    assert list(pmap(workers.square, range(6), Executor("dask", 2), desc="t")) == [x * x for x in range(6)]


def test_a_scheduler_that_dies_mid_map_is_one_line_naming_what_finished(tmp_path: Path) -> None:
    dask = Path(sys.executable).parent / "dask"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    sched = subprocess.Popen(
        [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    worker = subprocess.Popen(
        [str(dask), "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        results = []
        with pytest.raises(EnvironmentFault) as e:
            for r in pmap(workers.slow, range(40), Executor("dask", 1, address), desc="align"):
                results.append(r)
                if len(results) == 3:
                    os.killpg(sched.pid, signal.SIGKILL)
        assert results == [0, 1, 2]
        msg = str(e.value)
        assert "\n" not in msg and "lost after 3 of 40 items" in msg and "rerun `dvc repro align`" in msg
    finally:
        for proc in (worker, sched):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)


def test_no_scheduler_at_the_address_is_one_line() -> None:
    start = time.monotonic()
    with pytest.raises(EnvironmentFault, match="cannot reach the Dask scheduler"):
        list(pmap(workers.square, range(2), Executor("dask", 1, f"tcp://127.0.0.1:{_free_port()}"), desc="t"))
    assert time.monotonic() - start < 60


def test_a_file_an_item_cannot_read_is_not_a_lost_cluster() -> None:
    """On Dask as on the local pool, an item's own OSError propagates: it is not the scheduler's fault."""
    with pytest.raises(FileNotFoundError):
        list(pmap(workers.missing_file, range(3), Executor("dask", 1), desc="t"))
