"""The supervised pool: every task gets exactly one outcome, whatever a worker does."""

from __future__ import annotations

import os
import signal
import time

from pipeline.ingest.pool import CRASH, ERROR, OK, TIMEOUT, run_supervised


def _task(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == 5:
        time.sleep(60)
    if x == 7:
        raise ValueError("bad input 7")
    if x == 8:
        os._exit(0)  # exits cleanly without answering
    return x * x


def test_every_task_gets_one_outcome_despite_crashes_hangs_and_errors() -> None:
    items = list(range(12))
    started = time.monotonic()
    outcomes = {o.index: o for o in run_supervised(_task, items, workers=3, timeout_s=1.5)}
    assert time.monotonic() - started < 30
    assert sorted(outcomes) == items
    assert outcomes[3].status == CRASH and "exited" in outcomes[3].detail
    assert outcomes[5].status == TIMEOUT
    assert outcomes[7].status == ERROR and "bad input 7" in outcomes[7].detail
    assert outcomes[8].status == CRASH
    for i in (0, 1, 2, 4, 6, 9, 10, 11):
        assert outcomes[i].status == OK and outcomes[i].value == i * i


def test_a_single_worker_survives_a_crash() -> None:
    outcomes = list(run_supervised(_task, [3, 2, 3, 4], workers=1, timeout_s=10))
    assert [o.status for o in sorted(outcomes, key=lambda o: o.index)] == [CRASH, OK, CRASH, OK]


def test_no_items_no_outcomes() -> None:
    assert list(run_supervised(_task, [], workers=2, timeout_s=1)) == []


def _machine_fault(x: int) -> int:
    if x == 2:
        raise MemoryError
    return x


def test_a_fault_of_the_machine_in_a_worker_stops_the_map() -> None:
    """Memory is not the input's fault: no outcome for the task, the map stops with one line."""
    import pytest

    from pipeline.errors import EnvironmentFault

    with pytest.raises(EnvironmentFault, match="task 2: MemoryError"):
        list(run_supervised(_machine_fault, [0, 1, 2, 3], workers=2, timeout_s=10))
