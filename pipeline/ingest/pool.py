"""A worker pool that survives its workers: one task per worker at a time, so a crash or a hang is
pinned on the one input that caused it.

`concurrent.futures.ProcessPoolExecutor` breaks as a whole when one worker dies (a decoder
segfault) and cannot time out a single task. Here the parent knows which task each worker holds:
a dead worker's task is reported as a crash, a task past its time limit has its worker killed and
is reported as a timeout, and a fresh worker takes the next task.

Why not `pipeline.parallel.pmap`: its process pool cannot time out one task, and one dead worker
breaks the whole pool (which pmap rightly reports as a lost pool). Ingest must instead pin a decoder
crash or hang on its one input and go on. This pool uses pmap's start method (spawn: no inherited
OpenCV/FFmpeg/torch thread state) and the same split of faults: a worker that hits a fault of the
machine (memory, disk, file handles), or is killed by SIGKILL (the kernel's out-of-memory killer),
stops the map with `EnvironmentFault` instead of quarantining the take it held.
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing as mp
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from pipeline.errors import EnvironmentFault, is_environment_fault
from pipeline.parallel import START_METHOD

log = logging.getLogger(__name__)

OK, CRASH, TIMEOUT, ERROR, ENVIRONMENT = "ok", "crash", "timeout", "error", "environment"
READY = ("ready",)  # a spawned worker's first message: its imports are done, task clocks may start
STARTUP_S = 120.0  # a worker that is not ready by then cannot start on this machine


@dataclass(frozen=True)
class Outcome:
    """What became of one task: its value, or why there is none."""

    index: int
    status: str  # OK | CRASH | TIMEOUT | ERROR (ENVIRONMENT is raised, never yielded)
    value: Any = None  # the function's result when OK
    detail: str = ""  # exit code, seconds or the exception text otherwise


def _serve(fn: Callable[[Any], Any], conn: Connection) -> None:
    """Worker loop: receive (index, item), send back (index, status, value)."""
    faulthandler.disable()  # a crash is reported by the parent (task and exit code), not as a stack dump
    conn.send(READY)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        index, item = msg
        try:
            conn.send((index, OK, fn(item)))
        except Exception as e:  # noqa: BLE001 - any failure of one task is that task's outcome
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            if is_environment_fault(e):
                conn.send((index, ENVIRONMENT, str(e) if isinstance(e, EnvironmentFault) else last))
            else:
                conn.send((index, ERROR, last))


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(fn, child), daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.born = time.monotonic()
        self.ready = False
        self.started = 0.0

    def give(self, index: int, item: Any) -> None:
        self.task, self.started = index, time.monotonic()
        self.conn.send((index, item))

    def deadline(self, timeout_s: float) -> float:
        """A task's clock starts when the worker is ready (spawning and importing are not the input's time)."""
        return self.started + timeout_s if self.ready else self.born + max(STARTUP_S, timeout_s)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def run_supervised(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, timeout_s: float) -> Iterator[Outcome]:
    """Apply `fn` to every item in worker processes; yield one Outcome per item (in completion order).

    `fn` must be a picklable top-level function (spawned workers import it; they see no patches of this
    process). Never raises for a task's sake; raises `EnvironmentFault` for the machine's.
    """
    if not items:
        return
    ctx = mp.get_context(START_METHOD)
    pending = list(range(len(items)))[::-1]
    pool = [_Worker(ctx, fn) for _ in range(max(1, min(workers, len(items))))]
    try:
        for w in pool:
            if pending:
                i = pending.pop()
                w.give(i, items[i])
        while any(w.task is not None for w in pool):
            busy = [w for w in pool if w.task is not None]
            soonest = min(w.deadline(timeout_s) for w in busy)
            ready = wait(
                [w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=max(0.0, soonest - time.monotonic())
            )
            now = time.monotonic()
            for k, w in enumerate(pool):
                if w.task is None:
                    continue
                outcome = None
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                        if msg == READY:
                            w.ready, w.started = True, max(w.started, now)
                        else:
                            index, status, value = msg
                            outcome = Outcome(
                                index, status, value if status == OK else None, "" if status == OK else str(value)
                            )
                    except (EOFError, OSError):
                        pass  # died before answering: the sentinel says so below
                if outcome is None and (w.proc.sentinel in ready or not w.proc.is_alive()):
                    w.proc.join(timeout=5)
                    if not w.ready:
                        raise EnvironmentFault(
                            f"a worker process could not start (exit code {w.proc.exitcode}); nothing was probed by it"
                        )
                    if w.proc.exitcode == -signal.SIGKILL:
                        raise EnvironmentFault(
                            f"a worker was killed (SIGKILL: out of memory?) on task {w.task}; "
                            "rerun when the machine has memory to spare"
                        )
                    outcome = Outcome(w.task, CRASH, detail=f"worker exited with code {w.proc.exitcode}")
                if outcome is not None and outcome.status == ENVIRONMENT:
                    raise EnvironmentFault(f"a worker stopped on task {outcome.index}: {outcome.detail}")
                if outcome is None and not w.ready and now >= w.deadline(timeout_s):
                    raise EnvironmentFault(
                        f"a worker process did not start within {w.deadline(timeout_s) - w.born:g} s"
                    )
                if outcome is None and w.ready and now >= w.deadline(timeout_s):
                    outcome = Outcome(w.task, TIMEOUT, detail=f"no answer after {timeout_s:g} s")
                if outcome is None:
                    continue
                if outcome.status in (CRASH, TIMEOUT):
                    log.debug(
                        "task %d: %s (%s); starting a fresh worker", outcome.index, outcome.status, outcome.detail
                    )
                    w.stop(kill=True)
                    w = pool[k] = _Worker(ctx, fn)
                w.task = None
                yield outcome
                if pending:
                    i = pending.pop()
                    w.give(i, items[i])
    finally:
        for w in pool:
            w.stop(kill=w.task is not None)
