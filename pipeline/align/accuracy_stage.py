"""The align_accuracy stage: the detected 5 points against the simulator's ground truth.

Only the simulator has truth (`data/raw/_truth`); the figures go to `reports/align_accuracy.json`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline.align.accuracy import accuracy
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.stage import main, with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)


def run(layout: Layout, params: Params, truth: str | Path | None = None) -> None:
    """NME and detection rate per pose, illumination and mode; `truth` defaults to data/raw/_truth."""
    truth_dir = Path(truth) if truth else Layout.truth(layout.raw)
    report = accuracy(pd.read_parquet(layout.manifest), layout.aligned, truth_dir)
    io.write_json(layout.align_accuracy_report, with_provenance(report, params))
    for mode, figs in report.get("mode", {}).items():
        log.info("%-28s detection %s  NME %s", mode, figs["detection_rate"], figs["nme_mean"])


if __name__ == "__main__":
    raise SystemExit(main(run))
