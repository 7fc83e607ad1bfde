"""Where the per-take work runs: a local process pool, or a Dask distributed cluster.

Both call the same `process_take`, so they produce identical files; Dask lets the same stage run
on a cluster as recordings pile up (`align.executor: dask`, scheduler address in params or
$MVFER_DASK_SCHEDULER; with no address a LocalCluster of `align.workers` processes is started).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm import tqdm

log = logging.getLogger(__name__)
SCHEDULER_ENV = "MVFER_DASK_SCHEDULER"


def run_local(func: Callable[[dict], dict], jobs: list[dict], workers: int) -> Iterator[dict]:
    """Results as they finish; one process per worker (in-process when workers == 1)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in tqdm(jobs, desc="align", unit="take"):
            yield func(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(func, job) for job in jobs]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="align", unit="take"):
            yield fut.result()


def run_dask(func: Callable[[dict], dict], jobs: list[dict], workers: int, address: str = "") -> Iterator[dict]:
    """Results as they finish on a Dask cluster; starts (and stops) a LocalCluster without an address."""
    from dask.distributed import Client, LocalCluster, as_completed as dask_completed

    address = os.environ.get(SCHEDULER_ENV) or address
    cluster = None
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, host="127.0.0.1")
        client = Client(cluster)
    log.info("dask: %s with %d workers", address or "LocalCluster", len(client.scheduler_info()["workers"]))
    try:
        futures = client.map(func, jobs, pure=False)
        for fut in tqdm(dask_completed(futures), total=len(futures), desc="align (dask)", unit="take"):
            yield fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
