"""The capture stage's shell: render the simulated capture into data/raw and its figures into reports/capture.json.

The simulator is the built-in "rig" (an optional branch of the pipeline): `pipeline.capture.simulate`
renders; this shell picks the folders through the layout and the executor from `params.executor`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.capture.simulate import simulate
from pipeline.layout import Layout
from pipeline.parallel import Executor
from pipeline.params import Params
from pipeline.stage import main, with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)


def run(layout: Layout, params: Params, out: str | Path | None = None, report: str | Path | None = None) -> None:
    """Render into `out` (default data/raw) atomically, then write the render figures."""
    raw = Path(out) if out else layout.raw
    ex = Executor(params.executor.kind, params.capture.workers, params.executor.dask_scheduler)
    figures = simulate(params.capture, raw, ex)
    io.write_json(Path(report) if report else layout.capture_report, with_provenance(figures, params, "capture"))
    log.info(
        "rendered %d takes (%d frames) in %.1f s: %.1f frames/s, %.1f frames/s per core",
        figures["n_takes"],
        figures["n_frames"],
        figures["wall_s"],
        figures["frames_per_s"],
        figures["frames_per_s_per_core"] or 0,
    )


if __name__ == "__main__":
    raise SystemExit(main(run))
