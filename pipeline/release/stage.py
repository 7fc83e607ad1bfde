"""The release stage: `release/<name>-<version>/`, its archive, and `reports/release.json`.

The shell (`run`) reads the stage's declared inputs through the `Layout` into a `ReleaseInputs`; the
core (`build_release`) builds the release from that data and the explicit folders it copies from
and writes to. Nothing here reads a path constant or the live params.yaml.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from pipeline import vocab
from pipeline.consent import Ledger, read_ledger
from pipeline.errors import environment_fault, is_environment_fault
from pipeline.layout import SUBJECTS_NAME, Layout
from pipeline.params import Params, ReleaseParams
from pipeline.release import build
from pipeline.release.croissant import croissant
from pipeline.release.datasheet import datasheet
from pipeline.release.documents import croissant_meta, license_text, rai_fields, readme, release_figures
from pipeline.stage import main, with_provenance
from pipeline.stages import RELEASE_REPORTS, reports_planned
from pipeline.utils import io

log = logging.getLogger(__name__)

# The reports whose figures the datasheet and Croissant quote (each a declared dep of the stage).
REPORTS_READ: tuple[str, ...] = RELEASE_REPORTS
PROVENANCE_KEY = "provenance"
PARAMS_READ = ("release", "ingest.raw_dir", "import.licence.redistribution", "source.kind")

CopyFile = Callable[[Path, Path], Any]


@dataclass(frozen=True)
class ReleaseInputs:
    """What a release is built from: tables and reports as data, and the folders whose files are copied."""

    manifest: pd.DataFrame
    align_takes: pd.DataFrame
    labels: pd.DataFrame | None  # None: the QA stage has not run
    splits: dict[str, dict]  # protocol -> its split file's content
    ledger: Ledger
    reports: dict[str, dict]  # report name -> content, without its provenance block
    aligned_dir: Path
    raw_dir: Path
    manifest_name: str = "manifest.parquet"


@dataclass(frozen=True)
class Built:
    """A published release: its archive and the report's figures (without provenance)."""

    archive: Path
    report: dict[str, Any]


def read_report(path: Path) -> dict:
    """A report's figures, `{}` when absent. Its provenance block is dropped: it describes the run that
    wrote the report, and must never reach the release's bytes (the release stays reproducible)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k != PROVENANCE_KEY} if isinstance(data, dict) else {}


def read_inputs(layout: Layout, raw: Path, source_kind: str = "simulator") -> ReleaseInputs:
    """The stage's declared inputs, read through the layout (the reports of stages planned for this source)."""
    labels = pd.read_parquet(layout.labels) if layout.labels.exists() else None
    splits = {p.stem: json.loads(p.read_text()) for p in sorted(layout.splits.glob("*.json"))}
    return ReleaseInputs(
        manifest=pd.read_parquet(layout.manifest),
        align_takes=pd.read_parquet(layout.align_takes),
        labels=labels,
        splits=splits,
        ledger=read_ledger(raw / SUBJECTS_NAME),
        reports={name: read_report(layout.report(name)) for name in reports_planned(REPORTS_READ, source_kind)},
        aligned_dir=layout.aligned,
        raw_dir=raw,
        manifest_name=layout.manifest.name,
    )


def data_source(manifest: pd.DataFrame, released: pd.DataFrame) -> str:
    """Where the released takes came from, per ingest's `source` column: one of vocab.SOURCES,
    `mixed`, or `unknown` when the manifest does not say (then nothing claims "simulated")."""
    if vocab.SOURCE_COLUMN not in manifest.columns or released.empty:
        return "unknown"
    src = set(released[vocab.SOURCE_COLUMN].astype(str))  # the released rows are the manifest's own
    return src.pop() if len(src) == 1 else "mixed"


def check_previous(prev: Path | None, name: str) -> Path | None:
    """The previous release is an explicit input (params `release.previous` or --previous), never
    guessed from whatever happens to be on disk."""
    if prev is None:
        return None
    if not (prev / "metadata" / "takes.csv").is_file() or not (prev / "metadata" / "labels.csv").is_file():
        raise build.ReleaseError(
            f"{prev}: previous release (release.previous) has no metadata/takes.csv and labels.csv"
        )
    if prev.name == name:
        raise build.ReleaseError(f"{prev}: release.previous is the release being built ({name})")
    return prev


def build_release(
    inputs: ReleaseInputs,
    r: ReleaseParams,
    version: str,
    redistribution: bool,
    out_root: Path,
    tmp_root: Path,
    previous: Path | None = None,
    copy: CopyFile = shutil.copyfile,
) -> Built:
    """Build the release in `tmp_root` (outside the DVC output), then rename it into `out_root`.

    A killed build leaves nothing inside `out_root`; its leftovers in `tmp_root` (and the hidden
    temp entries older versions left in `out_root`) are removed when the next build starts. A fault
    of the machine while writing (disk full) stops with one line and renames nothing into `out_root`.
    """
    build.parse_version(version)
    name = f"{r.name}-{version}"
    epoch = int(datetime.fromisoformat(r.date).replace(tzinfo=UTC).timestamp())
    build.clean_leftovers(out_root, tmp_root)
    refusal = build.licence_refusal(inputs.manifest, redistribution)
    if refusal:
        raise build.ReleaseError(f"{inputs.manifest_name}: {refusal}")
    sel = build.select_takes(inputs.manifest, inputs.ledger, inputs.align_takes)
    takes = build.take_table(sel.takes, inputs.align_takes, inputs.labels)
    ids = set(takes["take_id"])
    build.check_loadable([inputs.aligned_dir / f"{t}.npz" for t in sorted(ids)])
    labels = (
        build.label_table(inputs.labels, ids)
        if inputs.labels is not None
        else pd.DataFrame(columns=["take_id", "label"])
    )
    labels = build.with_dataset_labels(labels, inputs.manifest, ids)
    splits = {p: build.filter_split(s, ids) for p, s in sorted(inputs.splits.items())}
    split_rows = build.split_table(splits)
    prev = check_previous(previous, name)
    source = data_source(inputs.manifest, sel.takes)

    d = tmp_root / name
    tmp_archive = tmp_root / f"{name}.tar.gz"
    try:
        d.mkdir(parents=True)
        _write_release(d, name, version, r, sel, takes, labels, splits, split_rows, prev, source, inputs, copy)
        build.deterministic_tar(d, tmp_archive, epoch)
        build.publish(d, tmp_archive, out_root)
    except BaseException as e:
        shutil.rmtree(tmp_root, ignore_errors=True)  # a half-built release is never kept (and frees the disk)
        if is_environment_fault(e):
            raise environment_fault(e, f"writing release {name} (nothing was published)") from e
        raise
    shutil.rmtree(tmp_root, ignore_errors=True)
    archive = out_root / f"{name}.tar.gz"
    figures = release_figures(takes, labels, split_rows, sel)
    report = {
        "name": name,
        "archive_sha256": io.sha256_file(archive),
        "previous_release": prev.name if prev else None,
        **figures,
        "data_source": source,
        "takes_excluded": sel.excluded,
        "subjects_excluded": sel.subjects_excluded,
    }
    log.info(
        "release %s: %d takes of %d subjects; excluded %s; archive %s",
        name,
        figures["takes"],
        figures["subjects"],
        sel.excluded,
        archive,
    )
    return Built(archive, report)


def _write_release(
    d: Path,
    name: str,
    version: str,
    r: ReleaseParams,
    sel: build.Selection,
    takes: pd.DataFrame,
    labels: pd.DataFrame,
    splits: dict[str, dict],
    split_rows: pd.DataFrame,
    prev: Path | None,
    source: str,
    inputs: ReleaseInputs,
    copy: CopyFile,
) -> None:
    """Every file of the release folder, into the (temporary) folder `d`."""
    (d / "metadata").mkdir()
    (d / "splits").mkdir()
    (d / "aligned").mkdir()
    for t in tqdm(sorted(takes["take_id"]), desc="release", unit="take", leave=False):
        copy(inputs.aligned_dir / f"{t}.npz", d / "aligned" / f"{t}.npz")
    if r.include_raw:
        (d / "raw").mkdir()
        for t, rel in zip(sel.takes["take_id"], sel.takes["path"]):
            copy(inputs.raw_dir / rel, d / "raw" / f"{t}{Path(rel).suffix}")
    takes.to_csv(d / "metadata" / "takes.csv", index=False, lineterminator="\n")
    labels.to_csv(d / "metadata" / "labels.csv", index=False, lineterminator="\n")
    split_rows.to_csv(d / "metadata" / "splits.csv", index=False, lineterminator="\n")
    for pname, s in splits.items():
        (d / "splits" / f"{pname}.json").write_text(json.dumps(s, indent=1, sort_keys=True) + "\n")
    reports = inputs.reports
    figures = release_figures(takes, labels, split_rows, sel)
    simulated = source == vocab.SOURCE_SIMULATOR
    (d / "DATASHEET.md").write_text(datasheet(name, r, reports, figures, source))
    (d / "CHANGELOG.md").write_text(build.changelog(prev, takes, labels, r.name, version, r.date))
    (d / "LICENSE").write_text(license_text(r.license, name))
    (d / "README.md").write_text(readme(name, r, figures, simulated))
    files = {
        "takes": ("metadata/takes.csv", io.sha256_file(d / "metadata" / "takes.csv"), takes),
        "labels": ("metadata/labels.csv", io.sha256_file(d / "metadata" / "labels.csv"), labels),
        "splits": ("metadata/splits.csv", io.sha256_file(d / "metadata" / "splits.csv"), split_rows),
    }
    meta = croissant_meta(name, version, r, figures, reports, simulated)
    doc = croissant(meta, files, rai_fields(reports, figures, simulated, r.creator))
    (d / "croissant.json").write_text(json.dumps(doc, indent=1) + "\n")
    build.write_sums(d)


def run(
    layout: Layout,
    params: Params,
    version: str | None = None,
    previous: str | Path | None = None,
    *,
    copy: CopyFile = shutil.copyfile,
) -> None:
    """Build the release named by params (or `version`), comparing with `previous` (or release.previous).

    `copy` copies one file into the release (tests inject a failing one to simulate a full disk).
    """
    r = params.release
    raw = layout.resolve(params.ingest.raw_dir)
    if previous is not None:
        prev: Path | None = Path(previous)  # as typed on the command line
    else:
        prev = layout.resolve(r.previous) if r.previous else None
    built = build_release(
        read_inputs(layout, raw, params.source.kind),
        r,
        version or r.version,
        params.import_.licence.redistribution,
        out_root=layout.release,
        tmp_root=layout.stage_tmp("release"),
        previous=prev,
        copy=copy,
    )
    report = {**built.report, "archive": layout.relative(built.archive)}
    io.write_json(layout.release_report, with_provenance(report, params, *PARAMS_READ))


if __name__ == "__main__":
    raise SystemExit(main(run))
