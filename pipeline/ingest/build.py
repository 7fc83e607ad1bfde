"""Assemble the manifest: every log row and every file in exactly one manifest row, with reasons.

Pure logic over already-parsed rows, consent records and probe results, so each rule is tested
directly; `pipeline.ingest.run` reads the inputs and `pipeline.ingest.stage` writes the outputs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pandas as pd

from pipeline.consent import Consent, Ledger, redact_withdrawn
from pipeline.ingest.probe import FRAMES_CONTAINER, ProbeResult
from pipeline.ingest.schema import PORTABLE_NAME_RE, LogRow, Problem
from pipeline.modes import DEFAULT_FIELDS, mode_of
from pipeline.params import Bounds
from pipeline.vocab import ACCEPTED, QUARANTINED

MANIFEST_COLUMNS = [
    "take_id",
    "path",
    "sha256",
    "size_bytes",
    "subject_id",
    "session",
    "camera",
    "yaw",
    "pitch",
    "illumination",
    "prompted_expression",
    "fps",
    "n_frames",
    "width",
    "height",
    "duration_s",
    "recorded_at",
    "status",
    "reason_code",
    "reason",
    "log_line",
]
# Columns every manifest has; the capture log's own extra columns follow them. The rig's checksum
# column is compared with the file's, not copied (the manifest's sha256 is the file's).
_BASE_COLUMNS = MANIFEST_COLUMNS + ["file_fps", "reason_codes", "mode"]
LOG_ONLY_COLUMNS = ("file",)
SOURCE_PATH = "source_path"  # written by the importers: the take's path in the source tree


@dataclass(frozen=True)
class Inputs:
    """Everything ingest found: validated rows, consent, files on disk and what probing said."""

    rows: list[LogRow]
    consent: dict[str, Consent]
    bad_consent: dict[str, str]
    disk_files: list[str]  # files found under the takes folder, relative posix paths
    probes: dict[str, ProbeResult]  # by relative path, for every file that exists and is safe
    log_name: str = "capture_log.csv"
    entries_not_walked: int = 0  # entries inside linked folders, counted but not taken in
    folders_not_listed: int = 0  # folders that could not be listed: their entries are unknown
    mode_fields: tuple[str, ...] = DEFAULT_FIELDS  # ingest.mode_fields: the mode is computed once, here


def _probe_problems(
    path: str, probe: ProbeResult, log_fps: float | None, bounds: Bounds, fps_tol: float
) -> list[Problem]:
    """Decoding errors, bounds from params, and disagreement between the log's fps and the file's."""
    if probe.error_code:
        return [Problem(probe.error_code, f"{path}: {probe.error}")]
    out = []
    frames = probe.container == FRAMES_CONTAINER  # a frame folder plays at the log's fps
    fps = log_fps if frames else probe.fps
    duration = probe.n_frames / log_fps if frames and log_fps and probe.n_frames else probe.duration_s
    checks = (
        ("fps", fps, bounds.fps),
        ("n_frames", probe.n_frames, bounds.n_frames),
        ("width", probe.width, bounds.width),
        ("height", probe.height, bounds.height),
        ("duration_s", duration, bounds.duration_s),
    )
    for name, value, (lo, hi) in checks:
        if value is None or not lo <= value <= hi:
            out.append(
                Problem("out_of_bounds", f"{path}: {name} = {value} is outside the bounds [{lo}, {hi}] in params.yaml")
            )
    if not frames and log_fps is not None and probe.fps and abs(probe.fps - log_fps) > fps_tol * log_fps:
        out.append(
            Problem(
                "fps_mismatch", f"{path}: the capture log says {log_fps:g} fps, the file plays at {probe.fps:g} fps"
            )
        )
    return out


def _consent_problems(sid: str | None, inp: Inputs) -> list[Problem]:
    """The one consent rule (pipeline.consent): fail-closed, the same as the release's."""
    if not sid:
        return []
    ex = Ledger(inp.consent, inp.bad_consent).research_exclusion(sid)
    return [Problem(ex.code, ex.message)] if ex else []


def _record(probe: ProbeResult | None, log_fps: float | None = None) -> dict:
    if probe is None:
        return {}
    rec = {k: getattr(probe, k) for k in ("sha256", "size_bytes", "n_frames", "width", "height", "duration_s")} | {
        "file_fps": probe.fps
    }
    if probe.container == FRAMES_CONTAINER and log_fps and probe.n_frames:
        rec["duration_s"] = probe.n_frames / log_fps
    return rec


def _checksum_problem(path: str, expected: str, probe: ProbeResult) -> Problem | None:
    """The rig's own checksum, when the log carries one, must match the bytes on disk."""
    expected = expected.strip().lower()
    if not expected or not probe.sha256 or probe.error_code:
        return None
    if expected != probe.sha256:
        return Problem(
            "checksum_mismatch", f"{path}: sha256 is {probe.sha256[:12]}..., the capture log says {expected[:12]}..."
        )
    return None


def assemble(inp: Inputs, bounds: Bounds, fps_tolerance: float) -> tuple[pd.DataFrame, dict]:
    """The manifest (one row per log row, plus one per orphan file) and the ingest report."""
    refs: dict[str, list[int]] = {}
    for r in inp.rows:
        if r.values.get("file"):
            refs.setdefault(r.values["file"], []).append(r.line)

    records: list[dict] = []
    for r in inp.rows:
        v, problems = r.values, list(r.problems)
        path = v.get("file")
        probe = inp.probes.get(path) if path else None
        if path and len(refs[path]) > 1:
            others = ", ".join(str(n) for n in refs[path] if n != r.line)
            problems.append(
                Problem("shared_file", f"{inp.log_name} line {r.line}: {path} is also claimed by line(s) {others}")
            )
        if path and probe is None:
            problems.append(
                Problem(
                    "missing_file",
                    f"{inp.log_name} line {r.line}, field 'file': {path} does not exist in the raw folder",
                )
            )
        elif probe is not None and path:
            problems += _probe_problems(path, probe, v.get("fps"), bounds, fps_tolerance)
            mismatch = _checksum_problem(path, r.raw.get("sha256") or "", probe)
            problems += [mismatch] if mismatch else []
        problems += _consent_problems(v.get("subject_id"), inp)
        records.append(
            {
                "take_id": v.get("take_id") or (r.raw.get("take_id") or None),
                "path": path if path else (r.raw.get("file") or None),
                "subject_id": v.get("subject_id"),
                "session": v.get("session"),
                "camera": v.get("camera"),
                "yaw": v.get("yaw"),
                "pitch": v.get("pitch"),
                "illumination": v.get("illumination"),
                "prompted_expression": v.get("prompted_expression"),
                "fps": v.get("fps"),
                "recorded_at": v.get("recorded_at"),
                "log_line": r.line,
                "_problems": problems,
                "mode": mode_of(r.raw | v, inp.mode_fields),
            }
            | _extra_columns(r)
            | _record(probe, v.get("fps"))
        )

    for path in sorted(set(inp.disk_files) - set(refs)):
        probe = inp.probes.get(path)
        # What the entry itself is (a FIFO, a loop, damaged) comes first: it is the reason people act on.
        problems = (
            [Problem(probe.error_code, f"{path}: {probe.error}")] if probe is not None and probe.error_code else []
        )
        problems.append(Problem("orphan_file", f"{path}: no capture log row refers to this entry"))
        name = path.rsplit("/", 1)[-1]
        if not PORTABLE_NAME_RE.match(name):
            problems.append(
                Problem("non_portable_name", f"file name {name!r} is not in the portable set [A-Za-z0-9._-]")
            )
        records.append({"path": path, "log_line": None, "_problems": problems} | _record(probe))

    _mark_duplicate_content(records)
    df = _frame(records)
    return redact_withdrawn(df, _report(df, inp))  # counted, never named (pipeline.consent)


def _extra_columns(r: LogRow) -> dict[str, str]:
    """Log columns beyond the rig's (an importer's dataset_label, official_fold, imaging, light...): kept as text."""
    return {k: val for k, val in r.raw.items() if k not in _BASE_COLUMNS and k not in LOG_ONLY_COLUMNS}


def _mark_duplicate_content(records: list[dict]) -> None:
    """Identical bytes under two names: the earliest logged take keeps them, the others are quarantined."""
    groups: dict[str, list[dict]] = {}
    for rec in records:
        if rec.get("sha256") and rec.get("n_frames"):
            groups.setdefault(rec["sha256"], []).append(rec)
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort(
            key=lambda r: (r.get("log_line") is None, r.get("recorded_at") or "", r.get("take_id") or "", r["path"])
        )
        keeper = group[0]
        name = keeper.get("take_id") or keeper["path"]
        for rec in group[1:]:
            rec["_problems"].append(Problem("duplicate_content", f"{rec['path']}: same bytes (sha256) as {name}"))


def _frame(records: list[dict]) -> pd.DataFrame:
    for rec in records:
        problems: list[Problem] = rec.pop("_problems")
        rec["status"] = QUARANTINED if problems else ACCEPTED
        rec["reason_code"] = problems[0].code if problems else None
        rec["reason"] = "; ".join(p.message for p in problems) if problems else None
        rec["reason_codes"] = ",".join(dict.fromkeys(p.code for p in problems)) if problems else None
    df = pd.DataFrame.from_records(records)
    for col in _BASE_COLUMNS:  # a log of only its header (no rows, maybe no files) still gives every column
        if col not in df:
            df[col] = None
    extras = sorted(c for c in df.columns if c not in _BASE_COLUMNS)
    df = df[_BASE_COLUMNS + extras]
    types = {
        "yaw": "Float64",
        "pitch": "Float64",
        "fps": "Float64",
        "file_fps": "Float64",
        "duration_s": "Float64",
        "n_frames": "Int64",
        "width": "Int64",
        "height": "Int64",
        "size_bytes": "Int64",
        "log_line": "Int64",
    }
    df = df.astype(types)
    for col in df.columns.difference(list(types)):
        df[col] = df[col].astype("string")
    return df.sort_values(["take_id", "path"], na_position="last", kind="stable").reset_index(drop=True)


def _report(df: pd.DataFrame, inp: Inputs) -> dict:
    """Counts that add up, by construction and by check; every quarantined item with its reason."""
    n_rows, n_files = len(inp.rows), len(inp.disk_files)
    from_log = int(df["log_line"].notna().sum())
    orphans = int(df["log_line"].isna().sum())
    on_disk = set(inp.disk_files)
    files_listed = set(df["path"].dropna()) & on_disk
    accounting_ok = from_log == n_rows and files_listed == on_disk and len(df) == n_rows + orphans
    if not accounting_ok:
        raise RuntimeError(
            f"ingest accounting bug: {n_rows} log rows, {from_log} in manifest; "
            f"{len(on_disk)} files, {len(files_listed)} listed"
        )
    q = df[df["status"] == QUARANTINED]
    codes = Counter(c for cs in q["reason_codes"].dropna() for c in cs.split(","))
    acc = df[df["status"] == ACCEPTED]
    return {
        "log_rows": n_rows,
        "files_found": n_files,
        "manifest_rows": len(df),
        "orphan_files": orphans,
        "accepted": len(acc),
        "quarantined": len(q),
        "quarantined_by_reason": dict(sorted(codes.items())),
        "primary_reason_counts": dict(sorted(Counter(q["reason_code"].dropna()).items())),
        "accepted_subjects": int(acc["subject_id"].nunique()),
        "accepted_frames": int(acc["n_frames"].sum()) if len(acc) else 0,
        "accepted_by_illumination": {k: int(v) for k, v in sorted(Counter(acc["illumination"]).items())},
        "accepted_by_pose": {
            k: int(v)
            for k, v in sorted(
                Counter(
                    mode_of({"yaw": y, "pitch": p}, ("yaw", "pitch")) for y, p in zip(acc["yaw"], acc["pitch"])
                ).items()
            )
        },
        "accepted_by_mode": {k: int(v) for k, v in sorted(Counter(acc["mode"]).items())},
        "accepted_by_expression": {k: int(v) for k, v in sorted(Counter(acc["prompted_expression"]).items())},
        "accounting": {
            "log_rows_in_manifest": from_log,
            "files_in_manifest": len(files_listed),
            "adds_up": accounting_ok,
            "entries_inside_linked_folders": inp.entries_not_walked,
            "folders_not_listed": inp.folders_not_listed,
        },
        "quarantined_items": [
            {"take_id": t, "path": p, "log_line": None if pd.isna(ln) else int(ln), "reason_code": c, "reason": r}
            | _source_of(q, i)
            for i, (t, p, ln, c, r) in enumerate(
                zip(q["take_id"], q["path"], q["log_line"], q["reason_code"], q["reason"])
            )
        ],
    }


def _source_of(q: pd.DataFrame, i: int) -> dict[str, str]:
    """An imported take's file as the lab named it (`source_path` of the capture log), so the lab finds it."""
    if SOURCE_PATH not in q.columns:
        return {}
    value = q[SOURCE_PATH].iloc[i]
    return {SOURCE_PATH: str(value)} if isinstance(value, str) and value else {}
