"""One parallel map for every per-item stage: a local process pool or a Dask cluster.

Why: capture, verification, ingest's probe, align and media each map one function over takes. They
share one start method (spawn: no inherited threads or FFmpeg state, the same on every OS), one
progress bar, one order of results (the order of the items, whatever finishes first), and one way
to fail: an environment fault in a worker (disk full, memory) or a lost cluster stops the map with
one line saying how many items finished, so the stage exits non-zero and a rerun completes the rest.

A function mapped here must be a module-level function of picklable arguments; it handles the
faults of its own item (returning a result that says why it was rejected) and lets anything else
propagate.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Literal, TypeVar

from tqdm import tqdm

from pipeline.errors import EnvironmentFault, environment_fault, is_environment_fault

log = logging.getLogger(__name__)

SCHEDULER_ENV = "MVFER_DASK_SCHEDULER"
START_METHOD = "spawn"

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Executor:
    """Where a map runs: `local` processes (1 = in this process), or `dask` (address, $MVFER_DASK_SCHEDULER,
    or a LocalCluster of `workers` processes on 127.0.0.1 when neither is set)."""

    kind: Literal["local", "dask"] = "local"
    workers: int = 1
    address: str = ""

    @property
    def scheduler(self) -> str:
        return os.environ.get(SCHEDULER_ENV) or self.address


def _lost(done: int, total: int, what: str, stage: str, cause: BaseException) -> EnvironmentFault:
    first = str(cause).strip().splitlines()[0][:160] if str(cause).strip() else ""
    reason = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
    return EnvironmentFault(
        f"{what} lost after {done} of {total} items ({reason}); finished items are kept: "
        f"rerun `dvc repro {stage}` (or the same command) to do the other {total - done}"
    )


def pmap(
    fn: Callable[[T], R],
    items: Sequence[T] | Iterable[T],
    executor: Executor | int = 1,
    *,
    desc: str = "",
    unit: str = "item",
    initializer: Callable[[], None] | None = None,
    stage: str | None = None,
) -> Iterator[R]:
    """`fn(item)` for every item, yielded in the items' order.

    `stage` is the DVC stage a lost pool or cluster tells the user to rerun (default: `desc`);
    `initializer` runs once in each local worker process (a Dask worker is set up by its cluster).

    Raises `EnvironmentFault` (one line) when a worker hits a fault of the machine or the pool or
    cluster is lost; other exceptions of `fn` propagate unchanged (they are bugs, not bad input).
    """
    ex = executor if isinstance(executor, Executor) else Executor("local", int(executor))
    jobs = list(items)
    if not jobs:
        return iter(())
    if ex.kind == "dask":
        return _dask(fn, jobs, ex, desc or "map", unit, stage or desc or "<stage>")
    if ex.workers <= 1 or len(jobs) == 1:
        return _serial(fn, jobs, desc, unit, initializer)
    return _local(fn, jobs, ex.workers, desc, unit, initializer, stage or desc or "<stage>")


def _serial(
    fn: Callable[[T], R], jobs: list[T], desc: str, unit: str, initializer: Callable[[], None] | None
) -> Iterator[R]:
    if initializer is not None:
        initializer()
    for job in tqdm(jobs, desc=desc, unit=unit, disable=None):
        try:
            yield fn(job)
        except BaseException as e:
            if is_environment_fault(e):
                raise environment_fault(e, desc or "map") from e
            raise


def _in_order(futures: list[Future], desc: str, unit: str) -> Iterator[tuple[int, Future]]:
    """(index, future) in index order, the progress bar advancing as futures finish."""
    index = {f: i for i, f in enumerate(futures)}
    ready: dict[int, Future] = {}
    nxt = 0
    pending = set(futures)
    with tqdm(total=len(futures), desc=desc, unit=unit, disable=None) as bar:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            bar.update(len(done))
            for f in done:
                ready[index[f]] = f
            while nxt in ready:
                yield nxt, ready.pop(nxt)
                nxt += 1


def _local(
    fn: Callable[[T], R],
    jobs: list[T],
    workers: int,
    desc: str,
    unit: str,
    initializer: Callable[[], None] | None,
    stage: str,
) -> Iterator[R]:
    ctx = mp.get_context(START_METHOD)
    done = 0
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=initializer) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        try:
            for _, fut in _in_order(futures, desc, unit):
                try:
                    result = fut.result()
                except BrokenProcessPool as e:
                    raise _lost(done, len(jobs), "a worker process died (out of memory?);", stage, e) from e
                except BaseException as e:
                    if is_environment_fault(e):
                        raise environment_fault(e, desc or "map") from e
                    raise
                done += 1
                yield result
        finally:
            for f in futures:
                f.cancel()


def _dask(fn: Callable[[T], R], jobs: list[T], ex: Executor, desc: str, unit: str, stage: str) -> Iterator[R]:
    from dask.distributed import Client, LocalCluster

    _quiet_dask()
    address = ex.scheduler
    cluster = None
    try:
        if address:
            client = Client(address, timeout="10s")
        else:
            cluster = LocalCluster(
                n_workers=ex.workers, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
            )
            client = Client(cluster)
    except (OSError, TimeoutError) as e:
        raise EnvironmentFault(f"cannot reach the Dask scheduler {address or '(local cluster)'}: {e}") from e
    log.info("dask: %s with %d workers", address or "LocalCluster", len(client.scheduler_info()["workers"]))
    done = 0
    try:
        futures = client.map(fn, jobs, pure=False)
        for i, fut in enumerate(futures):
            try:
                result = fut.result()
            except Exception as e:
                if is_environment_fault(e):
                    raise environment_fault(e, desc) from e
                if _is_dask_loss(e):
                    raise _lost(
                        done, len(jobs), f"the Dask scheduler {address or ''}".strip() + " was", stage, e
                    ) from e
                raise
            done += 1
            log.debug("%s: %d/%d", desc, i + 1, len(jobs))
            yield result
    finally:
        try:
            client.close(timeout=5)
        except Exception:  # a dead scheduler cannot be closed politely
            log.debug("dask client close failed", exc_info=True)
        if cluster is not None:
            cluster.close()


def _quiet_dask() -> None:
    """A lost scheduler is reported once, by pmap; the client's own reconnect tracebacks would bury it."""
    for name in ("distributed.client", "distributed.comm", "distributed.core", "distributed.batched"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _is_dask_loss(exc: BaseException) -> bool:
    """A cancelled future, a closed comm, a timeout or a worker killed again and again: the cluster went away.

    Judged by the exception's type name (distributed's own classes), never by "any OSError": a file the
    mapped function could not read is that item's fault and propagates as on the local pool.
    """
    lost = {"FutureCancelledError", "CancelledError", "CommClosedError", "KilledWorker"}
    return type(exc).__name__ in lost or isinstance(exc, TimeoutError)
