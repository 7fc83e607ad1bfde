"""Build a versioned dataset release: consent-filtered, documented, checksummed, reproducible.

Consent is read from the capture folder's `subjects.csv` at build time through the one fail-closed
ledger, so a subject who withdrew after their takes were accepted is excluded from every release
built afterwards. The archive is byte-identical for the same inputs: sorted entries, fixed
timestamps, owners and modes. Nothing is packaged that does not load, and nothing temporary ever
sits inside the release folder (a DVC output that `dvc push` publishes).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline import vocab
from pipeline.consent import Ledger
from pipeline.errors import PipelineError, environment_fault, is_environment_fault
from pipeline.modes import manifest_modes
from pipeline.utils import io

log = logging.getLogger(__name__)
SUMS = "SHA256SUMS"


class ReleaseError(PipelineError, ValueError):
    """The release cannot be built as asked; one line naming the file or setting."""


def licence_refusal(manifest: pd.DataFrame, redistribution: bool) -> str | None:
    """Why a public release of imported data is refused, or None.

    The public DFER datasets (Oulu-CASIA, CK+, DFEW, FERV39k, MAFW, AFEW) are licensed for research
    and forbid redistribution; only params stating the right (import.licence.redistribution) lift it.
    """
    if redistribution or "dataset" not in manifest:
        return None
    imported = manifest.loc[
        (manifest["status"] == vocab.ACCEPTED) & manifest["dataset"].notna() & (manifest["dataset"] != ""), "dataset"
    ]
    if imported.empty:
        return None
    names = ", ".join(sorted(set(imported)))
    return (
        f"{len(imported)} accepted takes come from an imported dataset ({names}) whose licence does not grant "
        "redistribution: a public release is refused (set import.licence.redistribution: true only if the licence "
        "allows it)"
    )


@dataclass(frozen=True)
class Selection:
    takes: pd.DataFrame  # released takes with their metadata
    excluded: dict[str, int]  # takes left out, by reason (no names)
    subjects_excluded: dict[str, int]  # subjects left out, by reason (counts only)


def select_takes(manifest: pd.DataFrame, ledger: Ledger, align_takes: pd.DataFrame) -> Selection:
    """Accepted, aligned takes of subjects who consent to public release and have not withdrawn.

    Consent comes from the one fail-closed ledger (pipeline.consent): a value it cannot read
    excludes the subject, exactly as ingest does.
    """
    acc = manifest[manifest["status"] == vocab.ACCEPTED].copy()
    reasons = []
    for sid in acc["subject_id"]:
        ex = ledger.release_exclusion(str(sid))
        reasons.append(ex.code if ex else None)
    acc["_reason"] = reasons
    aligned = set(align_takes["take_id"])
    acc.loc[acc["_reason"].isna() & ~acc["take_id"].isin(aligned), "_reason"] = "not_aligned"
    out = acc[acc["_reason"].isna()].drop(columns="_reason")
    dropped = acc[acc["_reason"].notna()]
    excluded = {"not_accepted_by_ingest": int((manifest["status"] != vocab.ACCEPTED).sum())}
    excluded |= {k: int(v) for k, v in sorted(Counter(dropped["_reason"]).items())}
    subj = dropped.drop_duplicates("subject_id")
    subj = subj[~subj["subject_id"].isin(out["subject_id"])]
    return Selection(
        out.sort_values("take_id").reset_index(drop=True),
        excluded,
        {k: int(v) for k, v in sorted(Counter(subj["_reason"]).items())},
    )


def take_table(sel: pd.DataFrame, align_takes: pd.DataFrame, labels: pd.DataFrame | None) -> pd.DataFrame:
    a = align_takes.set_index("take_id")
    t = pd.DataFrame(
        {
            "take_id": sel["take_id"],
            "subject": sel["subject_id"],
            "session": sel["session"],
            "camera": sel["camera"],
            "yaw": sel["yaw"].astype(float),
            "pitch": sel["pitch"].astype(float),
            "illumination": sel["illumination"],
            "mode": manifest_modes(sel),
            "prompted_expression": sel["prompted_expression"],
            "fps": sel["fps"].astype(float),
            "n_frames": sel["n_frames"].astype(int),
            "raw_sha256": sel["sha256"],
            "align_status": a.loc[sel["take_id"], "status"].to_numpy(),
            "align_detection_rate": a.loc[sel["take_id"], "detection_rate"].round(4).to_numpy(),
            "aligned_file": [f"aligned/{t}.npz" for t in sel["take_id"]],
        }
    )
    if labels is not None:
        lab = labels.set_index("take_id")
        t["qa_status"] = [lab.loc[x, "status"] if x in lab.index else "unlabelled" for x in t["take_id"]]
        t["qa_flags"] = [lab.loc[x, "flags"] if x in lab.index else None for x in t["take_id"]]
    return t.reset_index(drop=True)


def label_table(labels: pd.DataFrame, takes: set[str]) -> pd.DataFrame:
    cols = [
        "take_id",
        "label",
        "confidence",
        "agreement",
        "n_annotations",
        "onset_frame",
        "apex_frame",
        "flags",
        "status",
    ]
    return labels[labels["take_id"].isin(takes)][cols].sort_values("take_id").reset_index(drop=True)


DATASET_LABEL = "dataset_label"  # manifest column: the label the recordings' names (or the dataset) give


def with_dataset_labels(labels: pd.DataFrame, manifest: pd.DataFrame, takes: set[str]) -> pd.DataFrame:
    """The released labels: QA's accepted labels, and the names' own label (`dataset_label`) for every other take.

    Why: a lab's recordings labelled by their file names (split.labels: dataset) were split, trained and
    evaluated on those labels; a release without them would hold takes without the labels its splits used.
    The rows say where each label came from (`source`). Without a dataset label nothing changes.
    """
    if DATASET_LABEL not in manifest:
        return labels
    has = manifest[DATASET_LABEL].notna() & (manifest[DATASET_LABEL] != "")
    named = manifest[manifest["take_id"].isin(takes) & has]
    if named.empty:
        return labels
    qa = (labels[labels["status"] == vocab.ACCEPTED] if "status" in labels else labels.iloc[0:0]).assign(source="qa")
    rest = named[~named["take_id"].isin(set(qa["take_id"]))]
    extra = pd.DataFrame(
        {
            "take_id": rest["take_id"].astype(str),
            "label": rest[DATASET_LABEL].astype(str),
            "confidence": pd.NA,
            "agreement": pd.NA,
            "n_annotations": 0,
            "onset_frame": pd.NA,
            "apex_frame": pd.NA,
            "flags": None,
            "status": vocab.ACCEPTED,
            "source": DATASET_LABEL,
        }
    )
    parts = [df for df in (qa, extra) if len(df)]
    out = pd.concat(parts, ignore_index=True) if parts else qa
    return out.sort_values("take_id").reset_index(drop=True)


def filter_split(split: dict, takes: set[str]) -> dict:
    """A protocol restricted to released takes (a withdrawn subject disappears from every fold)."""
    out = {k: v for k, v in split.items() if k != "folds"}
    out["folds"] = []
    for fold in split["folds"]:
        f = {k: v for k, v in fold.items() if k != "subjects"}
        for name in vocab.SPLITS:
            if name in f:
                f[name] = [t for t in f[name] if t in takes]
        out["folds"].append(f)
    return out


def split_table(splits: dict[str, dict]) -> pd.DataFrame:
    rows = [
        {"protocol": name, "fold": fold["fold"], "split": part, "take_id": t}
        for name, s in sorted(splits.items())
        for fold in s["folds"]
        for part in vocab.SPLITS
        for t in fold.get(part, [])
    ]
    return pd.DataFrame(rows, columns=["protocol", "fold", "split", "take_id"])


def write_sums(root: Path) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != SUMS)
    lines = [f"{io.sha256_file(p)}  {p.relative_to(root).as_posix()}" for p in files]
    io.write_text(root / SUMS, "\n".join(lines) + "\n")


def deterministic_tar(src: Path, dest: Path, epoch: int) -> None:
    """A .tar.gz with sorted entries, fixed mtime/owner/mode and no gzip timestamp or name."""
    base = src.name
    with (
        io.atomic_path(dest, suffix=".tar.gz") as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        entries = sorted(src.rglob("*"), key=lambda p: p.relative_to(src).as_posix())
        for p in [src, *entries]:
            name = base if p == src else f"{base}/{p.relative_to(src).as_posix()}"
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
            if p.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = p.stat().st_size, 0o644
                with open(p, "rb") as f:
                    tar.addfile(info, f)


def parse_version(v: str) -> tuple[int, int, int]:
    parts = v.split(".")
    if len(parts) != 3 or not all(x.isdigit() for x in parts):
        raise ReleaseError(f"release version must be X.Y.Z, got {v!r} (release.version or --version)")
    return tuple(int(x) for x in parts)  # type: ignore[return-value]


def clean_leftovers(out_root: Path, tmp_root: Path) -> int:
    """Remove what an interrupted build left: the whole temp build folder, and the hidden temp
    entries (`.<name>.*.tmp*`, `.<name>.old`) that builds before this one left inside `out_root`."""
    n = 0
    if tmp_root.exists():
        shutil.rmtree(tmp_root)
        n += 1
    if out_root.is_dir():
        for p in out_root.iterdir():
            if p.name.startswith(".") and (".tmp" in p.name or p.name.endswith(".old")):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                n += 1
    if n:
        log.warning("removed %d leftover(s) of an interrupted release build", n)
    return n


def check_loadable(files: list[Path]) -> None:
    """Refuse to package an aligned file that is not exactly as align wrote it: its sha256 must match
    the one it records (io.npz_problem: a file altered after align may still load), then every array
    is read in full, so a damaged member fails its zip CRC here rather than on a user's machine."""
    bad = []
    for p in tqdm(files, desc="check aligned", unit="file", leave=False):
        problem = io.npz_problem(p) or load_problem(p)
        if problem:
            bad.append(problem if problem.startswith(f"{p.name}: ") else f"{p.name}: {problem}")
    if bad:
        raise ReleaseError(
            f"{len(bad)} aligned file(s) damaged or not loadable, rebuild them (dvc repro align) first: "
            + "; ".join(bad[:3])
            + ("; ..." if len(bad) > 3 else "")
        )


def load_problem(p: Path | BinaryIO) -> str | None:
    """None if every array of the .npz loads; otherwise a one-line reason (a content check, unlike
    io.npz_problem's recorded-sha256 check, so it also works on an archive member without a name)."""
    try:
        with np.load(p, allow_pickle=False) as z:
            for k in z.files:
                z[k]
    except Exception as e:  # noqa: BLE001 - any failure to load means "do not ship"; reported, never raised
        if is_environment_fault(e):  # out of memory is the machine's fault, not the file's
            raise environment_fault(e, "reading an aligned file") from e
        return f"does not load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})"
    return None


def publish(tmp_dir: Path, tmp_archive: Path, out_root: Path) -> None:
    """Rename a complete build into `out_root` (same filesystem: each rename is atomic)."""
    out_root.mkdir(parents=True, exist_ok=True)
    dest = out_root / tmp_dir.name
    if dest.exists():
        old = tmp_dir.with_name(f"{tmp_dir.name}.old")
        os.replace(dest, old)
        os.replace(tmp_dir, dest)
        shutil.rmtree(old)
    else:
        os.replace(tmp_dir, dest)
    os.replace(tmp_archive, out_root / tmp_archive.name)


def changelog(prev: Path | None, takes: pd.DataFrame, labels: pd.DataFrame, name: str, version: str, date: str) -> str:
    """Counts of what changed since `prev` (an explicit input); never a take id."""
    lines = [f"# Changelog of {name}", "", f"## {version} ({date})", ""]
    if prev is None:
        lines += [
            f"{len(takes)} takes of {takes['subject'].nunique()} subjects, {len(labels)} labels. Not compared with an "
            "earlier release (none given in release.previous).",
            "",
        ]
        return "\n".join(lines)
    old_t = pd.read_csv(prev / "metadata" / "takes.csv")
    old_l = pd.read_csv(prev / "metadata" / "labels.csv")
    added = sorted(set(takes["take_id"]) - set(old_t["take_id"]))
    removed = sorted(set(old_t["take_id"]) - set(takes["take_id"]))
    s_added = len(set(takes["subject"]) - set(old_t["subject"]))
    s_removed = len(set(old_t["subject"]) - set(takes["subject"]))
    merged = old_l.merge(labels, on="take_id", suffixes=("_old", "_new"))
    changed = merged[merged["label_old"].astype(str) != merged["label_new"].astype(str)]
    lines += [
        f"Compared with {prev.name}:",
        "",
        f"- takes added: {len(added)}; removed: {len(removed)}",
        f"- subjects added: {s_added}; removed: {s_removed} (withdrawals and consent changes are not itemised)",
        f"- labels changed: {len(changed)}",
        "",
        "Counts only: take ids are never listed, since a removed id joined with an older takes.csv would name",
        "the subject who withdrew.",
        "",
    ]
    return "\n".join(lines)
