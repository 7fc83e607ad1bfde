"""A worker pool that survives its workers: one task per worker at a time, so a crash or a hang is
pinned on the one input that caused it.

`concurrent.futures.ProcessPoolExecutor` breaks as a whole when one worker dies (a decoder
segfault) and cannot time out a single task. Here the parent knows which task each worker holds:
a dead worker's task is reported as a crash, a task past its time limit has its worker killed and
is reported as a timeout, and a fresh worker takes the next task.
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing as mp
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

log = logging.getLogger(__name__)

OK, CRASH, TIMEOUT, ERROR = "ok", "crash", "timeout", "error"


@dataclass(frozen=True)
class Outcome:
    """What became of one task: its value, or why there is none."""

    index: int
    status: str          # OK | CRASH | TIMEOUT | ERROR
    value: Any = None    # the function's result when OK
    detail: str = ""     # exit code, seconds or the exception text otherwise


def _serve(fn: Callable[[Any], Any], conn: Connection) -> None:
    """Worker loop: receive (index, item), send back (index, status, value)."""
    faulthandler.disable()  # a crash is reported by the parent (task and exit code), not as a stack dump
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
            conn.send((index, ERROR, last))


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(fn, child), daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.started = 0.0

    def give(self, index: int, item: Any) -> None:
        self.task, self.started = index, time.monotonic()
        self.conn.send((index, item))

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


# forkserver, not fork: a child forked from a process that already ran OpenCV, FFmpeg or torch inherits their
# thread pools mid-state and can hang; the fork server is a clean process that has run none of them. (Tests that
# patch a probe function in this process set "fork" so the children see the patch.)
START_METHOD = "forkserver"


def run_supervised(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, timeout_s: float) -> Iterator[Outcome]:
    """Apply `fn` to every item in worker processes; yield one Outcome per item (in completion order).

    `fn` must be a picklable top-level function. Never raises for a task's sake.
    """
    if not items:
        return
    ctx = mp.get_context(START_METHOD if START_METHOD in mp.get_all_start_methods() else "spawn")
    pending = list(range(len(items)))[::-1]
    pool = [_Worker(ctx, fn) for _ in range(max(1, min(workers, len(items))))]
    try:
        for w in pool:
            if pending:
                i = pending.pop()
                w.give(i, items[i])
        while any(w.task is not None for w in pool):
            busy = [w for w in pool if w.task is not None]
            soonest = min(w.started for w in busy) + timeout_s
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=max(0.0, soonest - time.monotonic()))
            now = time.monotonic()
            for k, w in enumerate(pool):
                if w.task is None:
                    continue
                outcome = None
                if w.conn in ready:
                    try:
                        index, status, value = w.conn.recv()
                        outcome = Outcome(index, status, value if status == OK else None, "" if status == OK else str(value))
                    except (EOFError, OSError):
                        pass  # died before answering: the sentinel says so below
                if outcome is None and (w.proc.sentinel in ready or not w.proc.is_alive()):
                    w.proc.join(timeout=5)
                    outcome = Outcome(w.task, CRASH, detail=f"worker exited with code {w.proc.exitcode}")
                if outcome is None and now - w.started >= timeout_s:
                    outcome = Outcome(w.task, TIMEOUT, detail=f"no answer after {timeout_s:g} s")
                if outcome is None:
                    continue
                if outcome.status in (CRASH, TIMEOUT):
                    log.debug("task %d: %s (%s); starting a fresh worker", outcome.index, outcome.status, outcome.detail)
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
