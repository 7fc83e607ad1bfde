"""DATASHEET.md in the sections of Datasheets for Datasets (Gebru et al.), every figure taken from
the pipeline's own reports and the release's own tables, never typed by hand."""

from __future__ import annotations

from pipeline import vocab


def _table(d: dict, head: tuple[str, str]) -> list[str]:
    return [f"| {head[0]} | {head[1]} |", "|---|---|"] + [f"| {k} | {v} |" for k, v in d.items()]


def _source_line(source: str) -> str:
    """ "Simulated" only when ingest's manifest says every released take came from the simulator."""
    if source == vocab.SOURCE_SIMULATOR:
        return (
            "- Simulated capture: every take was rendered by the project's capture simulator (synthetic faces, no real "
            "person)."
        )
    if source == vocab.SOURCE_RIG:
        return "- Recorded by the lab's capture rig."
    return f"- Source of the recordings: {source} (the ingest manifest does not attribute every take to one source)."


def _fmt(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, float) else "n/a"


def _pair(metrics: dict) -> tuple[str, list[str]] | None:
    """The backend and the models the datasheet reports: the pre-registered pair where it was tested."""
    backends = metrics.get("backends") or {}
    if not backends:
        return None
    pr = metrics.get("primary") or {}
    pr = pr.get("declared") or pr  # the pre-registered pair, also where this protocol did not run it
    backend = str(pr["backend"]) if pr.get("backend") in backends else str(next(iter(backends)))
    pair = [str(v) for v in (pr.get("baseline"), pr.get("candidate")) if v in backends[backend]]
    return backend, pair or [str(v) for v in backends[backend]]


def model_by_group(metrics: dict) -> list[str]:
    """Test accuracy of the evaluated models per skin tone and per mode: where the data serves some people or
    conditions worse, the datasheet says so (figures from reports/metrics.json, never typed)."""
    chosen = _pair(metrics)
    L = ["## Model accuracy by group", ""]
    if chosen is None:
        return L + ["- No model has been evaluated on this data yet.", ""]
    backend, variants = chosen
    tests = [t for t in metrics.get("test_sets", []) if t in vocab.TEST_SPLITS]
    runs = metrics.get("independent_runs", "n/a")
    L += [
        f"- Protocol `{metrics.get('protocol')}`, features `{backend}`, models {', '.join(variants)}: accuracy against "
        f"the QA labels on held-out test subjects, pooled over {runs} independent training runs.",
        "",
    ]
    tones = (metrics.get("per_skin_tone_accuracy") or {}).get(backend) or {}
    cols = [(v, t) for v in variants for t in tests if tones.get(v, {}).get(t)]
    if cols:
        names = sorted({k for v, t in cols for k in tones[v][t]})
        L += ["Accuracy per skin tone (as the takes record it; the simulator's tone0 is the lightest):", ""]
        L += ["| skin tone | " + " | ".join(f"{v} {t}" for v, t in cols) + " |", "|---|" + "---|" * len(cols)]
        L += [f"| {k} | " + " | ".join(_fmt(tones[v][t].get(k)) for v, t in cols) + " |" for k in names]
        L.append("")
    else:
        L += ["- Skin tone is not recorded for these takes: no accuracy per skin tone.", ""]
    per_mode = {v: (metrics["backends"][backend].get(v) or {}).get("per_mode_accuracy") or {} for v in variants}
    modes = sorted({m for d in per_mode.values() for m in d})
    if modes:
        L += ["Accuracy per mode (every test take of the mode):", ""]
        L += ["| mode | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
        L += [f"| {m} | " + " | ".join(_fmt(per_mode[v].get(m)) for v in variants) + " |" for m in modes]
        L.append("")
    return L


def datasheet(name: str, r, reports: dict[str, dict], fig: dict, source: str) -> str:
    ingest, align, acc, qa = (reports.get(k, {}) for k in ("ingest", "align", "align_accuracy", "qa"))
    simulated = source == vocab.SOURCE_SIMULATOR
    agr = qa.get("agreement", {})
    truth = qa.get("against_truth") or {}
    L = [
        f"# Datasheet: {name}",
        "",
        "Sections follow *Datasheets for Datasets* (Gebru et al., 2021). Figures are filled in "
        "from the pipeline's reports when the release is built.",
        "",
    ]
    L += [
        "## Motivation",
        "",
        "- Purpose: to measure facial expression recognition under *modes of variation never seen in training* (head "
        "pose, "
        "illumination), the setting of the Mode Variational LSTM (Baddar & Ro, AAAI 2019).",
        f"- Created by: {r.creator}.",
        "",
    ]
    L += (
        [
            "## Composition",
            "",
            f"- {fig['takes']} takes ({fig['frames']} frames) of {fig['subjects']} pseudonymous subjects; each take "
            "is a short video "
            "from neutral to the apex of one prompted expression, seen by one camera (head pose) under one "
            "illumination.",
            "",
            "Takes per mode:",
            "",
        ]
        + _table(fig["by_mode"], ("mode", "takes"))
        + ["", "Takes per prompted expression:", ""]
    )
    L += _table(fig["by_prompted_expression"], ("expression", "takes")) + ["", "Takes per aggregated label:", ""]
    L += _table(fig["by_label"], ("label", "takes")) + ["", "Takes per protocol split (all folds together):", ""]
    L += _table(fig["by_split"], ("protocol/split", "takes")) + [""]
    L += [
        "- Personal data: faces are biometric data. Subjects appear only as pseudonyms; no names, contact details or "
        "demographics are included."
        + (" This data is synthetic (rendered by the project's capture simulator)." if simulated else ""),
        "",
    ]
    L += [
        "## Collection process",
        "",
        f"- Capture log: {ingest.get('log_rows', 'n/a')} takes logged; {ingest.get('accepted', 'n/a')} accepted by "
        "ingest, "
        f"{ingest.get('quarantined', 'n/a')} quarantined ({ingest.get('quarantined_by_reason', {})}).",
        "- Every take was probed by decoding every frame and checksummed; nothing was dropped silently.",
        _source_line(source),
        "- Consent: only subjects who consented to public release and have not withdrawn are included; counts of "
        "excluded "
        "takes are in the release report, without naming anyone.",
        "",
    ]
    L += [
        "## Preprocessing and labelling",
        "",
        f"- Face detection and alignment: detector {align.get('detector', 'n/a')}, face found in "
        f"{align.get('frame_detection_rate', 'n/a')} of frames; {align.get('takes_flagged', 'n/a')} takes flagged.",
        (
            f"- Alignment accuracy against the simulator's ground truth: 5-point NME "
            f"{(acc.get('overall', {}).get('all', {}) or {}).get('nme_mean', 'n/a')} of the inter-ocular distance."
            if simulated
            else "- Alignment accuracy: no ground truth for these recordings."
        ),
        "- Annotation: none yet (no annotator has labelled these takes; QA ran on an empty export)."
        if qa and not qa.get("tasks") and not simulated
        else f"- Annotation: Label Studio; {qa.get('annotations_used', 'n/a')} usable annotations on "
        f"{qa.get('tasks', 'n/a')} tasks, "
        f"{qa.get('gold_annotations', 'n/a')} gold; Krippendorff's alpha {agr.get('krippendorff_alpha', 'n/a')} "
        f"({agr.get('verdict', 'n/a')}), {agr.get('krippendorff_alpha_without_flagged_annotators', 'n/a')} without "
        "flagged "
        f"annotators; Fleiss' kappa {agr.get('fleiss_kappa', 'n/a')}.",
        "- Aggregation: Dawid-Skene"
        + (
            f"; accuracy against the simulator's truth {truth.get('dawid_skene_accuracy', 'n/a')} "
            f"(majority vote {truth.get('majority_vote_accuracy', 'n/a')})"
            if simulated
            else ""
        )
        + f". {fig['labels_accepted']} labels accepted; the others are marked `reannotate` in `metadata/labels.csv`.",
    ]
    if fig.get("labels_from_names"):
        L.append(
            f"- Labels from the recordings' names: {fig['labels_from_names']} takes carry the expression their file "
            "name gives (the prompted expression; `source: dataset_label` in `metadata/labels.csv`), not yet checked "
            "by annotators."
        )
    L += [
        "",
    ]
    L += [
        "## Uses",
        "",
        "- Intended: research on expression recognition robust to pose and illumination; protocols "
        + (", ".join(f"`{p}`" for p in sorted({k.split("/")[0] for k in fig.get("by_split", {})})) or "none")
        + " in `splits/`.",
        "- Not intended: identifying people, emotion inference about real individuals, surveillance, any decision "
        "about a "
        "person.",
        "",
    ]
    L += model_by_group(reports.get("metrics", {}))
    L += [
        "## Distribution",
        "",
        f"- Licence: {r.license} (see LICENSE). Checksums in SHA256SUMS; Croissant metadata in croissant.json.",
        "",
    ]
    L += [
        "## Maintenance",
        "",
        f"- Maintained by {r.creator}. Versioned releases; a withdrawal removes the subject from every "
        "later release (CHANGELOG.md counts subjects added and removed).",
        "",
    ]
    return "\n".join(L)
