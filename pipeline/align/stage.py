"""The align stage: incremental work planning, execution, and the tables and report it writes.

Only new or changed takes are processed: each output carries the key of (content hash, alignment
parameters, code, weights, libraries), so adding one take reprocesses one take, changing a
parameter or the code reprocesses all, and a take that left the manifest loses its output.
`data/aligned` is a persistent DVC output: every file in it verifies itself (sha256 in the zip
comment) and is checked before it is trusted; a damaged one is rebuilt with a warning. Temp files
live outside it (`data/interim/.tmp/align`) and leftovers of a killed run are removed at start.

A take that cannot be aligned (a damaged video) is flagged with its reason and the stage goes on;
a fault of the machine (disk full, memory, a lost Dask scheduler) stops the stage before any table
or report is written, keeping the takes already finished, so a rerun does only the rest.
"""

from __future__ import annotations

import logging
import shutil
import time
import zipfile
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import vocab
from pipeline.align.detectors import DETECTORS, PARAM_KEY
from pipeline.align.process import AlignConfig, NpzWriter, process_take, summarise, take_key
from pipeline.align.provenance import provenance, provenance_key
from pipeline.align.quality import take_verdict
from pipeline.align.tracking import TrackerConfig
from pipeline.layout import Layout
from pipeline.modes import manifest_modes
from pipeline.parallel import Executor, pmap
from pipeline.params import AlignParams, Params
from pipeline.stage import main, with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)
QC_FIELDS = ("valid", "source", "score", "stretched", "n_faces", "blur", "brightness", "iod_px", "yaw_est", "jitter")
# What of align's own provenance (pipeline/align/provenance.py) the report keeps.
REPORTED_PROVENANCE = ("code_sha256", "modules", "weights_sha256", "libraries", "env", "env_not_keyed")


def align_config(a: AlignParams, provenance_hash: str = "") -> AlignConfig:
    """The parameters that change an aligned output (part of every take's cache key)."""
    options: dict[str, object] = {"min_face_px": a.min_face_px}
    if a.detector == "insightface":
        options["pack"] = a.insightface_pack
    else:
        options["precision"] = a.precision
    return AlignConfig(
        detector=a.detector,
        detector_options=tuple(sorted(options.items())),
        crop_size=a.crop_size,
        tracker=TrackerConfig(
            a.keyframe_every, a.max_fb_error, a.max_jump, a.dark_threshold, a.reacquire_radius, a.min_appearance
        ),
        provenance=provenance_hash,
    )


def executor_of(params: Params) -> Executor:
    """The shared `executor` section with `align.workers`: where the takes are aligned."""
    return Executor(params.executor.kind, params.align.workers, params.executor.dask_scheduler)


def clean_leftovers(out_dir: Path, tmp_dir: Path) -> int:
    """Remove what a killed run left: align's own temp folder, and old-style temps in the output."""
    n = 0
    if tmp_dir.exists():
        n += sum(1 for _ in tmp_dir.iterdir())
        shutil.rmtree(tmp_dir)
    for p in out_dir.glob(".*.tmp*"):  # written beside the outputs by earlier versions
        p.unlink(missing_ok=True)
        n += 1
    if n:
        log.warning("align: removed %d temp leftover(s) of an interrupted run", n)
    return n


def stored_key(npz: Path) -> str | None:
    """The cache key inside an aligned output, or None if it is unreadable (then it is redone)."""
    try:
        with np.load(npz) as z:
            return str(z["key"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def check_output(out: Path, key: str) -> str | None:
    """Why an existing output must be rebuilt (damaged, or made from other inputs), or None."""
    problem = io.npz_problem(out)
    if problem:
        return problem
    if stored_key(out) != key:
        return "key"
    return None


def plan(
    accepted: pd.DataFrame, out_dir: Path, cfg: AlignConfig, raw: Path, tmp_dir: Path
) -> tuple[list[dict], list[str], list[Path], list[str]]:
    """(jobs to run, take ids already up to date, stale outputs to delete, damaged take ids)."""
    jobs: list[dict] = []
    fresh: list[str] = []
    damaged: list[str] = []
    wanted = set(accepted["take_id"])
    row: Any  # a manifest row (itertuples)
    for row in accepted.itertuples(index=False):
        key = take_key(row.sha256, cfg)
        out = out_dir / f"{row.take_id}.npz"
        why = check_output(out, key) if out.exists() else "missing"
        if why is None:
            fresh.append(row.take_id)
            continue
        if why not in ("missing", "key"):
            log.warning("align: rebuilding %s: %s", row.take_id, why)
            damaged.append(row.take_id)
        jobs.append(
            {
                "take_id": row.take_id,
                "video": str(raw / row.path),
                "expected_frames": int(row.n_frames),
                "key": key,
                "out": str(out),
                "cfg": cfg,
                "tmp_dir": str(tmp_dir),
            }
        )
    stale = [p for p in sorted(out_dir.glob("*.npz")) if p.stem not in wanted]
    return jobs, fresh, stale, damaged


def _qc_frame(take_id: str, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    df = pd.DataFrame({f: arrays[f] for f in QC_FIELDS})
    df.insert(0, "frame", np.arange(len(df), dtype=np.int32))
    df.insert(0, "take_id", take_id)
    return df


def collect(accepted: pd.DataFrame, out_dir: Path, thresholds: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-frame QC and per-take tables from every output (reading only the small arrays)."""
    frames, takes = [], []
    manifest_modes(accepted)
    row: Any  # a manifest row (itertuples)
    for row in accepted.itertuples(index=False):
        out = out_dir / f"{row.take_id}.npz"
        base = {
            "take_id": row.take_id,
            "subject_id": row.subject_id,
            "mode": row.mode,  # ingest's mode
            "prompted_expression": row.prompted_expression,
        }
        try:
            with np.load(out) as z:
                arrays = {k: z[k] for k in (*QC_FIELDS, "expected_frames")}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
            why = f"no aligned output ({type(e).__name__}); see the log"
            takes.append(
                base | {"status": vocab.FLAGGED, "reason_codes": "align_failed", "reason": why, "sha256": None}
            )
            continue
        frames.append(_qc_frame(row.take_id, arrays))
        s = summarise(arrays)
        reasons = take_verdict(s, thresholds)
        takes.append(
            base
            | s
            | {
                "status": vocab.FLAGGED if reasons else vocab.ALIGN_OK,
                "reason_codes": ",".join(c for c, _ in reasons) or None,
                "reason": "; ".join(m for _, m in reasons) or None,
                "sha256": io.npz_sha256(out),
            }
        )
    qc = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["take_id", "frame", *QC_FIELDS])
    return qc, pd.DataFrame(takes)


def accepted_takes(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest's accepted takes, in take_id order (the order of every table align writes)."""
    return manifest[manifest["status"] == vocab.ACCEPTED].sort_values("take_id").reset_index(drop=True)


def align(
    manifest: pd.DataFrame,
    raw: Path,
    out_dir: Path,
    tmp_dir: Path,
    a: AlignParams,
    prov: dict[str, Any],
    *,
    executor: Executor | None = None,
    write: NpzWriter = io.write_npz,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Bring `out_dir` up to date with the manifest's accepted takes; (frames QC, takes, report).

    `prov` is align's provenance (`provenance.provenance`): its keyed part is in every cache key.
    Raises `EnvironmentFault` (finished takes kept on disk) when the machine or the cluster fails.
    """
    t0 = time.perf_counter()
    ex = executor or Executor("local", a.workers)
    accepted = accepted_takes(manifest)
    cfg = align_config(a, provenance_key(prov))
    out_dir.mkdir(parents=True, exist_ok=True)
    leftovers = clean_leftovers(out_dir, tmp_dir)
    t_check = time.perf_counter()
    jobs, fresh, stale, damaged = plan(accepted, out_dir, cfg, raw, tmp_dir)
    check_s = time.perf_counter() - t_check
    for p in stale:
        p.unlink()
    log.info(
        "align: %d takes to process (%d damaged), %d up to date, %d stale outputs removed (%s executor)",
        len(jobs),
        len(damaged),
        len(fresh),
        len(stale),
        ex.kind,
    )
    work = process_take if write is io.write_npz else partial(process_take, write=write)
    try:
        results = list(pmap(work, jobs, ex, desc="align", unit="take"))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    qc, takes = collect(accepted, out_dir, a.thresholds.model_dump())
    report = build_report(takes, qc, len(jobs), len(fresh), len(stale), time.perf_counter() - t0, a, ex.kind)
    report |= {
        "outputs_damaged_rebuilt": sorted(damaged),
        "temp_leftovers_removed": leftovers,
        "integrity_check_s": round(check_s, 2),
        "take_errors": sorted((r["take_id"], r["error"]) for r in results if "error" in r),
    }
    return qc, takes, report


def build_report(
    takes: pd.DataFrame,
    qc: pd.DataFrame,
    processed: int,
    fresh: int,
    removed: int,
    seconds: float,
    a: AlignParams,
    executor: str = "local",
) -> dict:
    flagged = takes[takes["status"] == "flagged"] if len(takes) else takes
    reasons = Counter(c for cs in flagged.get("reason_codes", pd.Series(dtype=str)).dropna() for c in cs.split(","))
    by_mode = {m: round(float(g["detection_rate"].mean()), 4) for m, g in takes.groupby("mode")} if len(takes) else {}
    return {
        "detector": a.detector,
        "executor": executor,
        "takes": len(takes),
        "takes_processed": processed,
        "takes_up_to_date": fresh,
        "outputs_removed": removed,
        "takes_ok": int((takes["status"] == vocab.ALIGN_OK).sum()) if len(takes) else 0,
        "takes_flagged": len(flagged),
        "flagged_by_reason": dict(sorted(reasons.items())),
        "frames": len(qc),
        "frame_detection_rate": round(float(qc["valid"].mean()), 4) if len(qc) else 0.0,
        "frames_detected": int((qc["source"] == 1).sum()) if len(qc) else 0,
        "frames_tracked": int((qc["source"] == 2).sum()) if len(qc) else 0,
        "frames_contrast_stretched": int(qc["stretched"].sum()) if len(qc) else 0,
        "detection_rate_by_mode": by_mode,
        "median_jitter": round(float(qc["jitter"].median()), 4) if len(qc) and qc["jitter"].notna().any() else None,
        "flagged_takes": [
            {"take_id": t, "reason": r} for t, r in zip(flagged.get("take_id", []), flagged.get("reason", []))
        ],
        "wall_s": round(seconds, 2),
    }


def run(layout: Layout, params: Params) -> None:
    """Align every accepted take of the manifest into `data/aligned`; write the QC tables and the report."""
    a = params.align
    DETECTORS.check(a.detector, PARAM_KEY)
    prov = provenance(a.detector, a.insightface_pack)  # resolves the weights: a missing file fails here, in one line
    log.info(
        "align: code %s, weights %s, libraries %s, keyed env %s, not keyed %s",
        prov["code_sha256"][:12],
        ",".join(w[:12] for w in prov["weights_sha256"]),
        prov["libraries"],
        prov["env"] or "none",
        prov["env_not_keyed"] or "none",
    )
    manifest = pd.read_parquet(layout.manifest)
    qc, takes, report = align(
        manifest,
        layout.resolve(params.ingest.raw_dir),
        layout.aligned,
        layout.stage_tmp("align"),
        a,
        prov,
        executor=executor_of(params),
    )
    io.write_parquet(layout.frames_qc, qc)
    io.write_parquet(layout.align_takes, takes)
    aligned_with = {k: prov[k] for k in REPORTED_PROVENANCE}
    io.write_json(
        layout.align_report,
        with_provenance(report, params, "align", "ingest.raw_dir", "executor", aligned_with=aligned_with),
    )
    log.info(
        "align: %d takes ok, %d flagged; face found in %.1f %% of frames",
        report["takes_ok"],
        report["takes_flagged"],
        100 * report["frame_detection_rate"],
    )


if __name__ == "__main__":
    raise SystemExit(main(run))
