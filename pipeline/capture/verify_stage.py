"""The capture_verify stage's shell: does a real face detector (MTCNN) find the simulated faces?

Reads the simulated raw folder (data/raw, or `--raw`) and writes reports/capture_verify.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.capture.verify import verify
from pipeline.layout import Layout
from pipeline.parallel import Executor
from pipeline.params import Params
from pipeline.stage import main, with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)


def run(layout: Layout, params: Params, raw: str | Path | None = None) -> None:
    """Detection rate and 5-point error per pose, illumination, mode and skin tone."""
    raw_dir = Path(raw) if raw else layout.raw
    ex = Executor(params.executor.kind, params.capture.workers, params.executor.dask_scheduler)
    report = verify(raw_dir, params.capture_verify, ex)
    io.write_json(layout.capture_verify_report, with_provenance(report, params, "capture_verify", "capture.workers"))
    for mode, figs in report.get("mode", {}).items():
        log.info("%-28s detection %.1f %%  NME %s", mode, 100 * figs["detection_rate"], figs["nme_mean"])


if __name__ == "__main__":
    raise SystemExit(main(run))
