"""The ingest stage's shell: raw folder -> data/interim/manifest.parquet and reports/ingest.json.

Reads `ingest.raw_dir` (or `--raw`) through the layout, runs the core (`pipeline.ingest.run`) and
writes the manifest, then the report, atomically. A fault of one take is in the manifest with its
reason; a fault of the machine (disk full writing the manifest, memory in a probe worker) stops the
stage before the report is written (exit 2).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.ingest.run import ingest_raw
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.stage import main, with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)


def run(layout: Layout, params: Params, raw: str | Path | None = None, *, writer: Any = io) -> None:
    """Write the manifest and the report; `writer` (write_parquet, write_json) is `pipeline.utils.io`."""
    raw_dir = Path(raw) if raw else layout.resolve(params.ingest.raw_dir)
    manifest, report = ingest_raw(raw_dir, params.ingest, params.rig)
    report = {"raw_dir": params.ingest.raw_dir if raw is None else str(raw)} | report
    writer.write_parquet(layout.manifest, manifest)
    writer.write_json(layout.ingest_report, with_provenance(report, params, "rig", "ingest"))
    log.info(
        "manifest: %d takes accepted, %d quarantined (%s) -> %s",
        report["accepted"],
        report["quarantined"],
        ", ".join(f"{k}: {v}" for k, v in report["quarantined_by_reason"].items()) or "none",
        layout.manifest,
    )


if __name__ == "__main__":
    raise SystemExit(main(run))
