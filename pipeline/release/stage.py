"""The release stage: `release/<name>-<version>/`, its archive, and `reports/release.json`."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline import paths, vocab
from pipeline.consent import read_ledger
from pipeline.params import Params
from pipeline.release import build
from pipeline.release.croissant import croissant
from pipeline.release.datasheet import datasheet
from pipeline.utils import io

log = logging.getLogger(__name__)

LICENSES = {
    "CC-BY-NC-4.0": ("Creative Commons Attribution-NonCommercial 4.0 International", "https://creativecommons.org/licenses/by-nc/4.0/"),
    "CC-BY-4.0": ("Creative Commons Attribution 4.0 International", "https://creativecommons.org/licenses/by/4.0/"),
}


REPORTS_READ = ("ingest", "align", "align_accuracy", "qa")  # each declared as a dep of the release stage


def _reports() -> dict[str, dict]:
    out = {}
    for name in REPORTS_READ:
        p = paths.REPORTS / f"{name}.json"
        out[name] = json.loads(p.read_text()) if p.exists() else {}
    return out


def _license_text(code: str, name: str) -> str:
    title, url = LICENSES[code]
    return (f"{name} is released under the {title} licence ({code}): {url}\n\n"
            "In addition, as a condition of use:\n"
            "- The videos and aligned frames show faces, which are biometric personal data where the subjects are real\n"
            "  people. Do not attempt to identify, contact or re-identify any subject, and do not combine this dataset\n"
            "  with other data for that purpose.\n"
            "- Subjects are pseudonymous; a subject may withdraw consent, and later releases then exclude them. Use the\n"
            "  newest release and delete copies of withdrawn subjects' data when asked to.\n")


def data_source(manifest: pd.DataFrame, released: pd.DataFrame) -> str:
    """Where the released takes came from, per ingest's `source` column: one of vocab.SOURCES,
    `mixed`, or `unknown` when the manifest does not say (then nothing claims "simulated")."""
    if vocab.SOURCE_COLUMN not in manifest.columns or released.empty:
        return "unknown"
    src = set(released[vocab.SOURCE_COLUMN].astype(str))  # the released rows are the manifest's own
    return src.pop() if len(src) == 1 else "mixed"


def _previous(params: Params, previous: Path | None, name: str) -> Path | None:
    """The previous release is an explicit input (params `release.previous` or --previous), never
    guessed from whatever happens to be on disk."""
    prev = previous if previous is not None else (paths.resolve(params.release.previous) if params.release.previous else None)
    if prev is None:
        return None
    if not (prev / "metadata" / "takes.csv").is_file() or not (prev / "metadata" / "labels.csv").is_file():
        raise build.ReleaseError(f"{prev}: previous release (release.previous) has no metadata/takes.csv and labels.csv")
    if prev.name == name:
        raise build.ReleaseError(f"{prev}: release.previous is the release being built ({name})")
    return prev


def run(params: Params, version: str | None = None, out_root: Path = paths.RELEASE, report_path: Path = paths.RELEASE_REPORT,
        previous: Path | None = None, tmp_root: Path = paths.RELEASE_TMP) -> dict:
    """Build the release in `tmp_root` (outside the DVC output), then rename it into `out_root`.

    A killed build leaves nothing inside `out_root`; its leftovers in `tmp_root` (and the hidden
    temp entries older versions left in `out_root`) are removed when the next build starts.
    """
    r = params.release
    version = version or r.version
    build.parse_version(version)
    name = f"{r.name}-{version}"
    epoch = int(datetime.fromisoformat(r.date).replace(tzinfo=timezone.utc).timestamp())
    build.clean_leftovers(out_root, tmp_root)
    raw = paths.resolve(params.ingest.raw_dir)
    manifest = pd.read_parquet(paths.MANIFEST)
    refusal = build.licence_refusal(manifest, params.import_.licence.redistribution)
    if refusal:
        raise build.ReleaseError(f"{paths.MANIFEST.name}: {refusal}")
    align_takes = pd.read_parquet(paths.ALIGN_TAKES)
    labels_all = pd.read_parquet(paths.LABELS) if paths.LABELS.exists() else None
    sel = build.select_takes(manifest, read_ledger(raw / paths.SUBJECTS_NAME), align_takes)
    takes = build.take_table(sel.takes, align_takes, labels_all)
    ids = set(takes["take_id"])
    build.check_loadable([paths.ALIGNED / f"{t}.npz" for t in sorted(ids)])
    labels = build.label_table(labels_all, ids) if labels_all is not None else pd.DataFrame(columns=["take_id", "label"])
    splits = {p.stem: build.filter_split(json.loads(p.read_text()), ids) for p in sorted(paths.SPLITS.glob("*.json"))}
    split_rows = build.split_table(splits)
    prev = _previous(params, previous, name)
    source = data_source(manifest, sel.takes)

    d = tmp_root / name
    d.mkdir(parents=True)
    _write_release(d, name, version, r, sel, takes, labels, splits, split_rows, prev, source, raw)
    tmp_archive = tmp_root / f"{name}.tar.gz"
    build.deterministic_tar(d, tmp_archive, epoch)
    archive = out_root / f"{name}.tar.gz"
    build.publish(d, tmp_archive, out_root)
    shutil.rmtree(tmp_root, ignore_errors=True)
    figures = release_figures(takes, labels, split_rows, sel)
    report = {"name": name, "archive": str(archive.relative_to(paths.ROOT) if archive.is_relative_to(paths.ROOT) else archive),
              "archive_sha256": io.sha256_file(archive), "previous_release": prev.name if prev else None, **figures,
              "data_source": source, "takes_excluded": sel.excluded, "subjects_excluded": sel.subjects_excluded}
    io.write_json(report_path, report)
    log.info("release %s: %d takes of %d subjects; excluded %s; archive %s", name, figures["takes"], figures["subjects"],
             sel.excluded, archive)
    return report


def _write_release(d: Path, name: str, version: str, r, sel: build.Selection, takes: pd.DataFrame, labels: pd.DataFrame,
                   splits: dict[str, dict], split_rows: pd.DataFrame, prev: Path | None, source: str, raw: Path) -> None:
    """Every file of the release folder, into the (temporary) folder `d`."""
    (d / "metadata").mkdir()
    (d / "splits").mkdir()
    (d / "aligned").mkdir()
    for t in tqdm(sorted(takes["take_id"]), desc="release", unit="take", leave=False):
        shutil.copyfile(paths.ALIGNED / f"{t}.npz", d / "aligned" / f"{t}.npz")
    if r.include_raw:
        (d / "raw").mkdir()
        for t, rel in zip(sel.takes["take_id"], sel.takes["path"]):
            shutil.copyfile(raw / rel, d / "raw" / f"{t}{Path(rel).suffix}")
    takes.to_csv(d / "metadata" / "takes.csv", index=False, lineterminator="\n")
    labels.to_csv(d / "metadata" / "labels.csv", index=False, lineterminator="\n")
    split_rows.to_csv(d / "metadata" / "splits.csv", index=False, lineterminator="\n")
    for pname, s in splits.items():
        (d / "splits" / f"{pname}.json").write_text(json.dumps(s, indent=1, sort_keys=True) + "\n")
    reports = _reports()
    figures = release_figures(takes, labels, split_rows, sel)
    simulated = source == vocab.SOURCE_SIMULATOR
    (d / "DATASHEET.md").write_text(datasheet(name, r, reports, figures, source))
    (d / "CHANGELOG.md").write_text(build.changelog(prev, takes, labels, r.name, version, r.date))
    (d / "LICENSE").write_text(_license_text(r.license, name))
    (d / "README.md").write_text(_readme(name, r, figures, simulated))
    files = {"takes": ("metadata/takes.csv", io.sha256_file(d / "metadata" / "takes.csv"), takes),
             "labels": ("metadata/labels.csv", io.sha256_file(d / "metadata" / "labels.csv"), labels),
             "splits": ("metadata/splits.csv", io.sha256_file(d / "metadata" / "splits.csv"), split_rows)}
    meta = {"name": name, "version": version, "date": r.date, "license_url": LICENSES[r.license][1], "url": r.url,
            "creator": r.creator, "cite_as": f"{r.creator}. {name}. {r.date}.",
            "description": "Short videos of faces making the six basic expressions from neutral to apex under a controlled grid "
                           "of head poses and illuminations, aligned per frame, labelled by annotators with agreement figures, "
                           "with subject-independent and unseen-mode split protocols.",
            "file_descriptions": {"takes": "one row per take: pseudonymous subject, mode, alignment quality",
                                  "labels": "aggregated expression label per take with confidence and agreement",
                                  "splits": "protocol x fold x split membership of every take"},
            "record_descriptions": {"takes": "takes", "labels": "labels", "splits": "split membership"}}
    (d / "croissant.json").write_text(json.dumps(croissant(meta, files, rai_fields(reports, figures, simulated)), indent=1) + "\n")
    build.write_sums(d)


def release_figures(takes: pd.DataFrame, labels: pd.DataFrame, splits: pd.DataFrame, sel: build.Selection) -> dict:
    lab = labels.set_index("take_id")["label"] if len(labels) else pd.Series(dtype=str)
    return {
        "takes": len(takes), "subjects": int(takes["subject"].nunique()), "frames": int(takes["n_frames"].sum()),
        "by_mode": dict(sorted(Counter(takes["mode"]).items())),
        "by_prompted_expression": dict(sorted(Counter(takes["prompted_expression"]).items())),
        "by_label": dict(sorted(Counter(lab.dropna()).items())),
        "labels_accepted": int((labels["status"] == vocab.ACCEPTED).sum()) if "status" in labels else 0,
        "by_split": {f"{p}/{s}": int(n) for (p, s), n in splits.groupby(["protocol", "split"]).size().items()} if len(splits) else {},
    }


def rai_fields(reports: dict[str, dict], figures: dict, simulated: bool) -> dict[str, object]:
    qa, ingest, align = reports.get("qa", {}), reports.get("ingest", {}), reports.get("align", {})
    agreement = qa.get("agreement", {})
    return {
        "dataCollection": "Subjects were recorded by a multi-camera rig (one camera per head pose) under controlled "
                          "illumination while making prompted expressions from neutral to apex."
                          + (" This release's data comes from the project's capture simulator (synthetic faces)." if simulated else ""),
        "dataCollectionType": "Experiments",
        "dataPreprocessingProtocol": f"Every take probed by decoding and checksummed ({ingest.get('quarantined', 0)} quarantined with "
                                     f"reasons); faces detected ({align.get('detector', 'mtcnn')}), tracked and aligned onto the "
                                     "ArcFace 5-point template (112 x 112).",
        "dataAnnotationProtocol": "Annotators in Label Studio confirm the expression, mark onset and apex frames and quality flags; "
                                  "labels aggregated with Dawid-Skene; items below thresholds re-annotated.",
        "dataAnnotationPlatform": "Label Studio (Community Edition)",
        "annotationsPerItem": f"{qa.get('annotations_used', 0) / max(qa.get('tasks', 1), 1):.2f} usable annotations per take on average; "
                              f"Krippendorff's alpha {agreement.get('krippendorff_alpha')}",
        "dataBiases": "Eight skin tones, three head poses and three illuminations; face detection is less reliable for darker skin "
                      "under dim and side light (see the datasheet).",
        "dataLimitations": ("Synthetic (simulated) faces; " if simulated else "") + "few subjects; posed, not spontaneous, expressions.",
        "personalSensitiveInformation": "Faces are biometric personal data. Subjects are pseudonymous ids; only subjects who "
                                        "consented to public release and did not withdraw are included.",
        "dataUseCases": "Research on dynamic facial expression recognition robust to head pose and illumination (unseen modes).",
        "dataReleaseMaintenancePlan": "Versioned releases; withdrawals remove a subject from every later release (see CHANGELOG.md).",
    }


def _readme(name: str, r, figures: dict, simulated: bool) -> str:
    return (f"# {name}\n\n" + ("Simulated data: rendered by mvfer's capture simulator, no real person.\n\n" if simulated else "")
            + f"{figures['takes']} takes ({figures['frames']} frames) of {figures['subjects']} pseudonymous subjects, "
            f"{len(figures['by_mode'])} pose x illumination modes.\n\n"
            "- `aligned/<take_id>.npz`: aligned RGB frames (T x 112 x 112 x 3, uint8), 5 landmarks per frame, validity\n"
            "- `metadata/takes.csv`, `metadata/labels.csv`, `metadata/splits.csv`; `splits/<protocol>.json`\n"
            "- `DATASHEET.md` (Datasheets for Datasets), `croissant.json` (MLCommons Croissant 1.0 with RAI fields)\n"
            "- `SHA256SUMS`: check with `sha256sum -c SHA256SUMS` or `mvfer release verify <folder or archive>`\n\n"
            f"Licence: {r.license}, see `LICENSE`. Changes: `CHANGELOG.md`.\n")
