"""Ingest's core: find entries, read the log and consent, probe in supervised workers, assemble.

Takes the raw folder and the `ingest` and `rig` sections; returns the manifest and the report. It
writes nothing: the shell (`pipeline.ingest.stage`) writes the outputs through the layout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline import vocab
from pipeline.ingest.build import Inputs, assemble
from pipeline.ingest.discover import BAD, Entry, ListDir, allowed_roots, classify, discover, list_dir
from pipeline.ingest.pool import CRASH, OK, TIMEOUT, Outcome, run_supervised
from pipeline.ingest.probe import ProbeResult, probe_take
from pipeline.ingest.schema import LOG_REQUIRED, CaptureLogError, read_consent, read_csv_rows, validate_log_rows
from pipeline.ingest.source import raw_source
from pipeline.layout import CAPTURE_LOG_NAME, SUBJECTS_NAME, TAKES_SUBDIR
from pipeline.params import IngestParams, Params, RigParams

log = logging.getLogger(__name__)

Probe = Callable[[Path], ProbeResult]


def _bad_probe(entry: Entry) -> ProbeResult:
    return ProbeResult(entry.size_bytes or 0, "", error_code=entry.code, error=entry.reason)


def _failed_probe(outcome: Outcome, entry: Entry) -> ProbeResult:
    """A worker that died, hung or raised on this entry: the entry is quarantined, the stage goes on."""
    code = {CRASH: "decoder_crash", TIMEOUT: "decoder_timeout"}.get(outcome.status, "probe_error")
    what = {CRASH: "the decoder crashed on it", TIMEOUT: "the decoder hung on it"}.get(outcome.status, "probing failed")
    return ProbeResult(entry.size_bytes or 0, "", error_code=code, error=f"{what} ({outcome.detail})")


def probe_all(
    entries: dict[str, Entry], workers: int, timeout_s: float, probe: Probe = probe_take
) -> dict[str, ProbeResult]:
    """Probe every take entry in supervised workers; bad entries get their reason without being opened.

    A fault of one entry (a crash, a hang, an error) quarantines it; a fault of the machine in a
    worker raises `EnvironmentFault` (see `pipeline.ingest.pool`). `probe` must be a module-level
    function: the workers are spawned and import it.
    """
    probes = {rel: _bad_probe(e) for rel, e in entries.items() if e.kind == BAD}
    items = sorted((rel, e) for rel, e in entries.items() if e.kind != BAD)
    outcomes = run_supervised(probe, [e.path for _, e in items], workers, timeout_s)
    for out in tqdm(outcomes, total=len(items), desc="probe", unit="take", disable=None):
        rel, entry = items[out.index]
        probes[rel] = out.value if out.status == OK else _failed_probe(out, entry)
        if out.status != OK:
            log.warning("%s: %s; quarantined, the other takes go on", rel, probes[rel].error)
    return probes


def ingest_raw(
    raw: Path, cfg: IngestParams, rig: RigParams, *, probe: Probe = probe_take, lister: ListDir = list_dir
) -> tuple[pd.DataFrame, dict]:
    """Read a raw capture folder and return (manifest, report); raises CaptureLogError if the log is unusable.

    `probe` and `lister` are the two calls that touch the takes (a test passes its own to simulate
    what root cannot: an unreadable file, an unlistable folder, a decoder that crashes).
    """
    raw = Path(raw)
    if not raw.is_dir():
        raise CaptureLogError(raw, "raw capture folder not found (set ingest.raw_dir in params.yaml)")
    log_path = raw / CAPTURE_LOG_NAME
    rows = validate_log_rows(read_csv_rows(log_path, LOG_REQUIRED), rig.expressions, rig.illuminations, log_path.name)
    consent, bad_consent = read_consent(raw / SUBJECTS_NAME)
    disk = discover(raw, lister)
    targets = dict(disk)
    roots = allowed_roots(raw)
    for r in rows:  # a log path outside takes/ (or through a link) is classified the same way
        rel = r.values.get("file")
        if rel and rel not in targets and os.path.lexists(raw / rel):
            targets[rel] = classify(raw / rel, roots, lister)
    log.info("%s: %d log rows, %d entries under %s/", raw, len(rows), len(disk), TAKES_SUBDIR)
    probes = probe_all(targets, cfg.workers, cfg.probe_timeout_s, probe)
    unwalked = sum(e.hidden_entries for e in targets.values())
    unlisted = sum(1 for e in targets.values() if e.code == "unreadable" and "cannot be listed" in (e.reason or ""))
    inp = Inputs(
        rows=rows,
        consent=consent,
        bad_consent=bad_consent,
        disk_files=sorted(disk),
        probes=probes,
        log_name=log_path.name,
        entries_not_walked=unwalked,
        folders_not_listed=unlisted,
        mode_fields=tuple(cfg.mode_fields),
    )
    manifest, report = assemble(inp, cfg.bounds, cfg.fps_tolerance)
    manifest[vocab.SOURCE_COLUMN] = report["source"] = raw_source(raw)  # the release says "simulated" only from this
    return manifest, report


def ingest(
    params: Params, raw: Path, *, probe: Probe = probe_take, lister: ListDir = list_dir
) -> tuple[pd.DataFrame, dict]:
    """`ingest_raw` with the `ingest` and `rig` sections of `params` (what tests and benches call)."""
    return ingest_raw(raw, params.ingest, params.rig, probe=probe, lister=lister)
