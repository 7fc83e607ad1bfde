"""The release's own texts and figures: counts per mode, label and split, the licence, README and the
Croissant Responsible-AI fields. Every figure comes from the release's tables or the stage's
reports (passed in as data), never typed by hand."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from pipeline import vocab
from pipeline.params import ReleaseParams
from pipeline.release.build import Selection

LICENSES = {
    "CC-BY-NC-4.0": (
        "Creative Commons Attribution-NonCommercial 4.0 International",
        "https://creativecommons.org/licenses/by-nc/4.0/",
    ),
    "CC-BY-4.0": ("Creative Commons Attribution 4.0 International", "https://creativecommons.org/licenses/by/4.0/"),
}


def license_text(code: str, name: str) -> str:
    title, url = LICENSES[code]
    return (
        f"{name} is released under the {title} licence ({code}): {url}\n\n"
        "In addition, as a condition of use:\n"
        "- The videos and aligned frames show faces, which are biometric personal data where the subjects are real\n"
        "  people. Do not attempt to identify, contact or re-identify any subject, and do not combine this dataset\n"
        "  with other data for that purpose.\n"
        "- Subjects are pseudonymous; a subject may withdraw consent, and later releases then exclude them. Use the\n"
        "  newest release and delete copies of withdrawn subjects' data when asked to.\n"
    )


def release_figures(takes: pd.DataFrame, labels: pd.DataFrame, splits: pd.DataFrame, sel: Selection) -> dict:
    lab = labels.set_index("take_id")["label"] if len(labels) else pd.Series(dtype=str)
    by_split: dict[str, int] = {}
    if len(splits):
        sizes = splits.groupby(["protocol", "split"]).size()
        by_split = {f"{p}/{s}": int(n) for (p, s), n in zip(sizes.index.tolist(), sizes.tolist())}
    named = {}
    if "source" in labels:  # labels the recordings' names give (a lab's own data, split.labels: dataset)
        named = {"labels_from_names": int((labels["source"] == "dataset_label").sum())}
    return named | {
        "takes": len(takes),
        "subjects": int(takes["subject"].nunique()),
        "frames": int(takes["n_frames"].sum()),
        "by_mode": dict(sorted(Counter(takes["mode"]).items())),
        "by_prompted_expression": dict(sorted(Counter(takes["prompted_expression"]).items())),
        "by_label": dict(sorted(Counter(lab.dropna()).items())),
        "labels_accepted": int((labels["status"] == vocab.ACCEPTED).sum()) if "status" in labels else 0,
        "by_split": by_split,
    }


# The simulator's own words (its release bytes are fixed: any change here changes the default archive's sha256).
SIMULATED_DESCRIPTION = (
    "Short videos of faces making the six basic expressions from neutral to apex under a "
    "controlled grid of head poses and illuminations, aligned per frame, labelled by "
    "annotators with agreement figures, with subject-independent and unseen-mode split "
    "protocols."
)
SIMULATED_KEYWORDS = ["facial expression recognition", "dynamic FER", "head pose", "illumination", "modes of variation"]
LABELS_BY_ANNOTATORS = "aggregated expression label per take with confidence and agreement"


def _annotated(reports: dict[str, dict]) -> bool:
    """People (or the simulated annotators) labelled these takes: QA ran on a non-empty export."""
    return bool(reports.get("qa", {}).get("tasks"))


def _names_only(reports: dict[str, dict], figures: dict) -> bool:
    """Every label is the one the recordings' names give: no annotator has labelled these takes yet."""
    return bool(figures.get("labels_from_names")) and not _annotated(reports)


def _listing(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


def _protocols(figures: dict) -> list[str]:
    return sorted({key.split("/")[0] for key in figures.get("by_split", {})})


def croissant_meta(name: str, version: str, r: ReleaseParams, figures: dict, reports: dict, simulated: bool) -> dict:
    """The Croissant document's dataset-level fields: the simulator's fixed words, or the lab's data as it is."""
    files = {
        "takes": "one row per take: pseudonymous subject, mode, alignment quality",
        "labels": LABELS_BY_ANNOTATORS,
        "splits": "protocol x fold x split membership of every take",
    }
    meta: dict[str, object] = {
        "name": name,
        "version": version,
        "date": r.date,
        "license_url": LICENSES[r.license][1],
        "url": r.url,
        "creator": r.creator,
        "cite_as": f"{r.creator}. {name}. {r.date}.",
        "file_descriptions": files,
        "record_descriptions": {"takes": "takes", "labels": "labels", "splits": "split membership"},
    }
    if simulated:
        return meta | {"description": SIMULATED_DESCRIPTION, "keywords": SIMULATED_KEYWORDS}
    expressions, modes = list(figures["by_prompted_expression"]), list(figures["by_mode"])
    if _names_only(reports, figures):
        labelled = "labelled with the expression each recording's name gives (not yet checked by annotators)"
        files["labels"] = "expression label per take from its recording's name (source: dataset_label)"
    elif _annotated(reports):
        labelled = "labelled by annotators with agreement figures"
    else:
        labelled = "not labelled yet"
    description = (
        f"Short videos of faces recorded by {r.creator}: {figures['takes']} takes of {figures['subjects']} "
        f"pseudonymous subjects making {len(expressions)} expressions ({_listing(expressions)}) in "
        f"{len(modes)} modes ({_listing(modes)}), aligned per frame, {labelled}, with split protocols "
        f"{_listing(_protocols(figures))}."
    )
    keywords = ["facial expression recognition", "dynamic FER", "modes of variation"]
    return meta | {"description": description, "keywords": keywords}


def rai_fields(reports: dict[str, dict], figures: dict, simulated: bool, creator: str = "") -> dict[str, object]:
    """Croissant's Responsible-AI fields: the simulator's fixed words, or what the pipeline knows of the lab's data."""
    qa, ingest, align = reports.get("qa", {}), reports.get("ingest", {}), reports.get("align", {})
    agreement = qa.get("agreement", {})
    annotated = simulated or _annotated(reports)
    modes, expressions = list(figures["by_mode"]), list(figures["by_prompted_expression"])
    if simulated:
        collection = (
            "Subjects were recorded by a multi-camera rig (one camera per head pose) under controlled "
            "illumination while making prompted expressions from neutral to apex. This release's data comes from "
            "the project's capture simulator (synthetic faces)."
        )
    else:
        collection = (
            f"Recorded by {creator or 'the lab'}: {figures['takes']} takes of {figures['subjects']} subjects in "
            f"{len(modes)} modes ({_listing(modes)}), as the recordings' names or capture log give them; frame rate, "
            "size and length read from each file."
        )
    if annotated:
        annotation: dict[str, object] = {
            "dataAnnotationProtocol": "Annotators in Label Studio confirm the expression, mark onset and apex frames "
            "and quality flags; labels aggregated with Dawid-Skene; items below thresholds "
            "re-annotated.",
            "dataAnnotationPlatform": "Label Studio (Community Edition)",
            "annotationsPerItem": f"{qa.get('annotations_used', 0) / max(qa.get('tasks', 1), 1):.2f} usable "
            f"annotations per take on average; Krippendorff's alpha {agreement.get('krippendorff_alpha')}",
        }
    else:
        annotation = {
            "dataAnnotationProtocol": (
                f"None yet: each of the {figures['labels_from_names']} takes carries the expression its recording's "
                "name gives (source: dataset_label in metadata/labels.csv), not checked by annotators."
                if figures.get("labels_from_names")
                else "None yet: no annotator has labelled these takes."
            ),
            "annotationsPerItem": "0 (no annotations yet)",
        }
    if simulated:
        biases = (
            "Eight skin tones, three head poses and three illuminations; face detection is less reliable "
            "for darker skin under dim and side light (see the datasheet)."
        )
        limitations = "Synthetic (simulated) faces; few subjects; posed, not spontaneous, expressions."
        uses = "Research on dynamic facial expression recognition robust to head pose and illumination (unseen modes)."
    else:
        rate = align.get("frame_detection_rate")
        found = f"{100 * rate:.1f} %" if isinstance(rate, int | float) else "n/a"
        biases = (
            f"Not measured: the pipeline records no demographics of the {figures['subjects']} subjects. The takes "
            f"cover {len(modes)} modes ({_listing(modes)}) and {len(expressions)} expressions; a face was found in "
            f"{found} of frames (see the datasheet)."
        )
        limitations = f"{figures['subjects']} subjects" + (
            "; labels from the recordings' names, not checked by annotators." if _names_only(reports, figures) else "."
        )
        uses = (
            f"Research on dynamic facial expression recognition across the modes these recordings vary "
            f"({_listing(modes)}; unseen-mode protocols)."
        )
    return {
        "dataCollection": collection,
        "dataCollectionType": "Experiments",
        "dataPreprocessingProtocol": f"Every take probed by decoding and checksummed ({ingest.get('quarantined', 0)} "
        f"quarantined with reasons); faces detected ({align.get('detector', 'mtcnn')}), "
        "tracked and aligned onto the ArcFace 5-point template (112 x 112).",
        **annotation,
        "dataBiases": biases,
        "dataLimitations": limitations,
        "personalSensitiveInformation": "Faces are biometric personal data. Subjects are pseudonymous ids; only "
        "subjects who consented to public release and did not withdraw are included.",
        "dataUseCases": uses,
        "dataReleaseMaintenancePlan": "Versioned releases; withdrawals remove a subject from every later release "
        "(see CHANGELOG.md).",
    }


def readme(name: str, r: ReleaseParams, figures: dict, simulated: bool) -> str:
    modes = (
        f"{len(figures['by_mode'])} pose x illumination modes"
        if simulated
        else f"{len(figures['by_mode'])} modes ({_listing(list(figures['by_mode']))})"
    )
    return (
        f"# {name}\n\n"
        + ("Simulated data: rendered by mvfer's capture simulator, no real person.\n\n" if simulated else "")
        + f"{figures['takes']} takes ({figures['frames']} frames) of {figures['subjects']} pseudonymous subjects, "
        f"{modes}.\n\n"
        "- `aligned/<take_id>.npz`: aligned RGB frames (T x 112 x 112 x 3, uint8), 5 landmarks per frame, validity\n"
        "- `metadata/takes.csv`, `metadata/labels.csv`, `metadata/splits.csv`; `splits/<protocol>.json`\n"
        "- `DATASHEET.md` (Datasheets for Datasets), `croissant.json` (MLCommons Croissant 1.0 with RAI fields)\n"
        "- `SHA256SUMS`: check with `sha256sum -c SHA256SUMS` or `mvfer release verify <folder or archive>`\n\n"
        f"Licence: {r.license}, see `LICENSE`. Changes: `CHANGELOG.md`.\n"
    )
