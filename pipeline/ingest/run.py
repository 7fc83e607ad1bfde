"""The ingest stage's I/O: find entries, read the log and consent, probe in supervised workers, write outputs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline import paths, vocab
from pipeline.ingest.build import Inputs, assemble
from pipeline.ingest.source import raw_source
from pipeline.ingest.discover import BAD, Entry, allowed_roots, classify, discover
from pipeline.ingest.pool import CRASH, OK, TIMEOUT, Outcome, run_supervised
from pipeline.ingest.probe import ProbeResult, probe_take
from pipeline.ingest.schema import LOG_REQUIRED, CaptureLogError, read_consent, read_csv_rows, validate_log_rows
from pipeline.params import Params
from pipeline.utils import io

log = logging.getLogger(__name__)


def _bad_probe(entry: Entry) -> ProbeResult:
    return ProbeResult(entry.size_bytes or 0, "", error_code=entry.code, error=entry.reason)


def _failed_probe(outcome: Outcome, entry: Entry) -> ProbeResult:
    """A worker that died, hung or raised on this entry: the entry is quarantined, the stage goes on."""
    code = {CRASH: "decoder_crash", TIMEOUT: "decoder_timeout"}.get(outcome.status, "probe_error")
    what = {CRASH: "the decoder crashed on it", TIMEOUT: "the decoder hung on it"}.get(outcome.status, "probing failed")
    return ProbeResult(entry.size_bytes or 0, "", error_code=code, error=f"{what} ({outcome.detail})")


def probe_all(entries: dict[str, Entry], workers: int, timeout_s: float) -> dict[str, ProbeResult]:
    """Probe every take entry in supervised workers; bad entries get their reason without being opened."""
    probes = {rel: _bad_probe(e) for rel, e in entries.items() if e.kind == BAD}
    items = sorted((rel, e) for rel, e in entries.items() if e.kind != BAD)
    outcomes = run_supervised(probe_take, [e.path for _, e in items], workers, timeout_s)
    for out in tqdm(outcomes, total=len(items), desc="probe", unit="take"):
        rel, entry = items[out.index]
        probes[rel] = out.value if out.status == OK else _failed_probe(out, entry)
        if out.status != OK:
            log.warning("%s: %s; quarantined, the other takes go on", rel, probes[rel].error)
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
    roots = allowed_roots(raw)
    for r in rows:  # a log path outside takes/ (or through a link) is classified the same way
        rel = r.values.get("file")
        if rel and rel not in targets and os.path.lexists(raw / rel):
            targets[rel] = classify(raw / rel, roots)
    log.info("%s: %d log rows, %d entries under %s/", raw, len(rows), len(disk), paths.TAKES_SUBDIR)
    probes = probe_all(targets, params.ingest.workers, params.ingest.probe_timeout_s)
    unwalked = sum(e.hidden_entries for e in targets.values())
    unlisted = sum(1 for e in targets.values() if e.code == "unreadable" and "cannot be listed" in (e.reason or ""))
    inp = Inputs(rows=rows, consent=consent, bad_consent=bad_consent, disk_files=sorted(disk), probes=probes,
                 log_name=log_path.name, entries_not_walked=unwalked, folders_not_listed=unlisted, mode_fields=tuple(params.ingest.mode_fields))
    manifest, report = assemble(inp, params.ingest.bounds, params.ingest.fps_tolerance)
    manifest[vocab.SOURCE_COLUMN] = report["source"] = raw_source(raw)  # the release says "simulated" only from this
    return manifest, report


def run(params: Params, raw: Path | None = None, manifest_path: Path = paths.MANIFEST, report_path: Path = paths.INGEST_REPORT) -> dict:
    """The DVC stage: write the manifest and the report atomically, log the summary."""
    manifest, report = ingest(params, raw)
    report = {"raw_dir": params.ingest.raw_dir if raw is None else str(raw)} | report
    io.write_parquet(manifest_path, manifest)
    io.write_json(report_path, report)
    log.info("manifest: %d takes accepted, %d quarantined (%s) -> %s", report["accepted"], report["quarantined"],
             ", ".join(f"{k}: {v}" for k, v in report["quarantined_by_reason"].items()) or "none", manifest_path)
    return report
