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
    return {
        "takes": len(takes),
        "subjects": int(takes["subject"].nunique()),
        "frames": int(takes["n_frames"].sum()),
        "by_mode": dict(sorted(Counter(takes["mode"]).items())),
        "by_prompted_expression": dict(sorted(Counter(takes["prompted_expression"]).items())),
        "by_label": dict(sorted(Counter(lab.dropna()).items())),
        "labels_accepted": int((labels["status"] == vocab.ACCEPTED).sum()) if "status" in labels else 0,
        "by_split": by_split,
    }


def rai_fields(reports: dict[str, dict], figures: dict, simulated: bool) -> dict[str, object]:
    qa, ingest, align = reports.get("qa", {}), reports.get("ingest", {}), reports.get("align", {})
    agreement = qa.get("agreement", {})
    return {
        "dataCollection": "Subjects were recorded by a multi-camera rig (one camera per head pose) under controlled "
        "illumination while making prompted expressions from neutral to apex."
        + (" This release's data comes from the project's capture simulator (synthetic faces)." if simulated else ""),
        "dataCollectionType": "Experiments",
        "dataPreprocessingProtocol": f"Every take probed by decoding and checksummed ({ingest.get('quarantined', 0)} "
        f"quarantined with reasons); faces detected ({align.get('detector', 'mtcnn')}), "
        "tracked and aligned onto the ArcFace 5-point template (112 x 112).",
        "dataAnnotationProtocol": "Annotators in Label Studio confirm the expression, mark onset and apex frames and "
        "quality flags; labels aggregated with Dawid-Skene; items below thresholds "
        "re-annotated.",
        "dataAnnotationPlatform": "Label Studio (Community Edition)",
        "annotationsPerItem": f"{qa.get('annotations_used', 0) / max(qa.get('tasks', 1), 1):.2f} usable annotations "
        f"per take on average; Krippendorff's alpha {agreement.get('krippendorff_alpha')}",
        "dataBiases": "Eight skin tones, three head poses and three illuminations; face detection is less reliable "
        "for darker skin under dim and side light (see the datasheet).",
        "dataLimitations": ("Synthetic (simulated) faces; " if simulated else "")
        + "few subjects; posed, not spontaneous, expressions.",
        "personalSensitiveInformation": "Faces are biometric personal data. Subjects are pseudonymous ids; only "
        "subjects who consented to public release and did not withdraw are included.",
        "dataUseCases": "Research on dynamic facial expression recognition robust to head pose and illumination "
        "(unseen modes).",
        "dataReleaseMaintenancePlan": "Versioned releases; withdrawals remove a subject from every later release "
        "(see CHANGELOG.md).",
    }


def readme(name: str, r: ReleaseParams, figures: dict, simulated: bool) -> str:
    return (
        f"# {name}\n\n"
        + ("Simulated data: rendered by mvfer's capture simulator, no real person.\n\n" if simulated else "")
        + f"{figures['takes']} takes ({figures['frames']} frames) of {figures['subjects']} pseudonymous subjects, "
        f"{len(figures['by_mode'])} pose x illumination modes.\n\n"
        "- `aligned/<take_id>.npz`: aligned RGB frames (T x 112 x 112 x 3, uint8), 5 landmarks per frame, validity\n"
        "- `metadata/takes.csv`, `metadata/labels.csv`, `metadata/splits.csv`; `splits/<protocol>.json`\n"
        "- `DATASHEET.md` (Datasheets for Datasets), `croissant.json` (MLCommons Croissant 1.0 with RAI fields)\n"
        "- `SHA256SUMS`: check with `sha256sum -c SHA256SUMS` or `mvfer release verify <folder or archive>`\n\n"
        f"Licence: {r.license}, see `LICENSE`. Changes: `CHANGELOG.md`.\n"
    )
