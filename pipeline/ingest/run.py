"""The ingest stage's I/O: find files, read the log and consent, probe in parallel, write outputs."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import pandas as pd
from tqdm import tqdm

from pipeline import paths
from pipeline.ingest.build import Inputs, assemble
from pipeline.ingest.probe import ProbeResult, probe_video
from pipeline.ingest.schema import LOG_REQUIRED, CaptureLogError, read_consent, read_csv_rows, validate_log_rows
from pipeline.params import Params
from pipeline.utils import io

log = logging.getLogger(__name__)


def display_path(rel: str) -> str:
    """A relative path as text that survives JSON and Parquet, even if its bytes are not UTF-8."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def discover(raw: Path) -> dict[str, Path]:
    """Every file under the takes folder (hidden ones too: nothing is skipped unseen)."""
    takes = raw / paths.TAKES_SUBDIR
    found: dict[str, Path] = {}
    if not takes.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(takes):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            found[display_path(full.relative_to(raw).as_posix())] = full
    return found


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _probe(path: Path) -> ProbeResult:
    cv2.setNumThreads(1)
    return probe_video(path)


def probe_all(targets: dict[str, Path], raw: Path, workers: int) -> dict[str, ProbeResult]:
    """Probe every safe target; a symlink that leads out of the raw folder is refused unopened."""
    probes: dict[str, ProbeResult] = {}
    safe = {}
    for rel, full in targets.items():
        if _inside(full, raw):
            safe[rel] = full
        else:
            probes[rel] = ProbeResult(full.lstat().st_size, "", error_code="path_escape",
                                      error="is a link that resolves outside the raw folder; not opened")
    items = sorted(safe.items())
    if workers > 1 and len(items) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(tqdm(pool.map(_probe, [f for _, f in items], chunksize=4), total=len(items), desc="probe", unit="file"))
    else:
        results = [probe_video(f) for _, f in tqdm(items, desc="probe", unit="file")]
    probes.update({rel: res for (rel, _), res in zip(items, results)})
    return probes


def ingest(params: Params, raw: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """Read a raw capture folder and return (manifest, report); raises CaptureLogError if the log is unusable."""
    raw = Path(raw) if raw else paths.resolve(params.ingest.raw_dir)
    if not raw.is_dir():
        raise CaptureLogError(raw, "raw capture folder not found (set ingest.raw_dir in params.yaml)")
    log_path = raw / paths.CAPTURE_LOG_NAME
    rows = validate_log_rows(read_csv_rows(log_path, LOG_REQUIRED), params.rig.expressions, params.rig.illuminations, log_path.name)
    consent, bad_consent = read_consent(raw / paths.SUBJECTS_NAME)
    disk = discover(raw)
    targets = dict(disk)
    for r in rows:
        rel = r.values.get("file")
        if rel and rel not in targets and (raw / rel).is_file():
            targets[rel] = raw / rel
    log.info("%s: %d log rows, %d files under %s/", raw, len(rows), len(disk), paths.TAKES_SUBDIR)
    probes = probe_all(targets, raw, params.ingest.workers)
    inp = Inputs(rows=rows, consent=consent, bad_consent=bad_consent, disk_files=sorted(disk), probes=probes, log_name=log_path.name)
    return assemble(inp, params.ingest.bounds, params.ingest.fps_tolerance)


def run(params: Params, raw: Path | None = None, manifest_path: Path = paths.MANIFEST, report_path: Path = paths.INGEST_REPORT) -> dict:
    """The DVC stage: write the manifest and the report atomically, log the summary."""
    manifest, report = ingest(params, raw)
    report = {"raw_dir": params.ingest.raw_dir if raw is None else str(raw)} | report
    io.write_parquet(manifest_path, manifest)
    io.write_json(report_path, report)
    log.info("manifest: %d takes accepted, %d quarantined (%s) -> %s", report["accepted"], report["quarantined"],
             ", ".join(f"{k}: {v}" for k, v in report["quarantined_by_reason"].items()) or "none", manifest_path)
    return report
