"""Render every figure of README.md and docs/ from the run that made it (`reports/*.json`, `pipeline/stages.py`).

Why: hand-typed numbers drift (README once said 702 takes where the data has 1,296). Each figure lives
in a block between `<!-- BEGIN generated:NAME -->` and `<!-- END generated:NAME -->`; this script
rewrites the blocks from the reports, and `--check` fails (exit 1, naming each stale block) when a
committed block differs from what its report gives, so CI catches a figure that no longer holds.

    python scripts/render_docs.py            # rewrite the blocks in README.md and docs/**/*.md
    python scripts/render_docs.py --check    # exit 1 naming every stale or unknown block
    python scripts/render_docs.py --reports DIR --check   # against other reports (the drift test)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("render_docs")

BLOCK = re.compile(
    r"(<!-- BEGIN generated:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- END generated:(?P=name) -->)", re.S
)
BEGIN = re.compile(r"<!-- BEGIN generated:([a-z0-9_]+) -->")
POSE = {"yaw+0_pitch+0": "yaw 0", "yaw-30_pitch+0": "yaw -30", "yaw+30_pitch+0": "yaw +30"}


class RenderError(Exception):
    """A block cannot be rendered: its report is missing or lacks a figure it shows."""


@dataclass(frozen=True)
class Reports:
    """The `reports/` folder a rendering reads; `name` is how the docs cite it."""

    folder: Path

    def load(self, name: str) -> dict[str, Any]:
        path = self.folder / f"{name}.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RenderError(f"reports/{name}.json is missing (run `dvc repro`)") from None
        return data


# --- formatting -------------------------------------------------------------------------------------------------


def n(x: float) -> str:
    """An integer with thousands separators (1,296)."""
    return f"{int(x):,}"


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f} %"


def pose_name(mode: str) -> str:
    return POSE.get(mode, mode)


def provenance_line(report: dict[str, Any]) -> str:
    """What a report's provenance block says about where it was made: date, machine, code, torch."""
    prov = report.get("provenance")
    if not isinstance(prov, dict):
        return "no provenance block in this report"
    parts = []
    for key in ("date", "generated_at", "recorded_at"):
        if prov.get(key) or report.get(key):
            parts.append(str(prov.get(key) or report.get(key)))
            break
    machine = prov.get("machine") or {}
    if machine:
        parts.append(f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores")
    if prov.get("mvfer"):
        parts.append(f"mvfer {prov['mvfer']}")
    if prov.get("code_sha256"):
        parts.append(f"code {str(prov['code_sha256'])[:12]}")
    if prov.get("torch"):
        parts.append(f"torch {prov['torch']}, {prov.get('threads', '?')} threads")
    if prov.get("mv_scan"):
        parts.append(f"MV scan {prov['mv_scan']}")
    return "; ".join(parts) or "empty provenance block"


def source(report: dict[str, Any], *names: str, detail: str | None = None) -> str:
    """The line under every block: which report(s), and the provenance of the first (or `detail`)."""
    files = ", ".join(f"`reports/{name}.json`" for name in names)
    detail = provenance_line(report) if detail is None else detail
    return f"*Rendered from {files} by `scripts/render_docs.py` ({detail}). Do not edit by hand.*"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; a `|` inside a cell is escaped so it cannot split the cell."""

    def cells(row: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    return [cells(header), "|" + "---|" * len(header)] + [cells(r) for r in rows]


# --- blocks -----------------------------------------------------------------------------------------------------


def block_stages(_: Reports) -> str:
    """The stage graph, from the one stage registry."""
    sys.path.insert(0, str(ROOT))
    from pipeline.stages import STAGES

    rows = []
    for s in STAGES:
        name = f"`{s.name}`" + (" (simulator)" if s.branch == "simulator" else "")
        cmd = f"`{s.cmd}`<br>`mvfer {' '.join(s.cli)}`"
        outs = ", ".join(f"`{o.path}`" for o in s.outs)
        rows.append([name, cmd, s.desc.replace("<", "&lt;"), outs])
    lines = table(["stage", "command", "what it does", "writes"], rows)
    return "\n".join(
        lines
        + ["", "*Rendered from `pipeline/stages.py` (`STAGES`) by `scripts/render_docs.py`. Do not edit by hand.*"]
    )


def block_stage_io(_: Reports) -> str:
    """What each stage reads (params keys, data) and writes, from the one stage registry."""
    sys.path.insert(0, str(ROOT))
    from pipeline.stages import STAGES

    rows = []
    for s in STAGES:
        params = ", ".join(f"`{k}`" for k in s.params) or "none"
        deps = ", ".join(f"`{d}`" for d in s.deps) or "none"
        outs = ", ".join(f"`{o.path}`" + ("" if o.kind == "out" else f" ({o.kind})") for o in s.outs)
        opts = ", ".join(f"`{o.flag}`" for o in s.options) or ""
        rows.append([f"`{s.name}`", params, deps, outs, opts])
    lines = table(["stage", "params", "data it reads", "writes", "CLI options"], rows)
    return "\n".join(
        lines
        + ["", "*Rendered from `pipeline/stages.py` (`STAGES`) by `scripts/render_docs.py`. Do not edit by hand.*"]
    )


def _best_backend(metrics: dict[str, Any]) -> str:
    """The feature backend on which the LSTM baseline is strongest on seen modes (evaluate's choice too)."""
    backends = metrics["backends"]
    return max(backends, key=lambda b: backends[b].get("lstm", {}).get("test_seen_accuracy_mean", 0.0))


def block_headline(r: Reports) -> str:
    """The pre-registered primary test first, then every variant on its protocol and backend."""
    metrics, ingest, qa, release = r.load("metrics"), r.load("ingest"), r.load("qa"), r.load("release")
    primary = metrics.get("primary") or {}
    declared = primary.get("declared") or {}
    backend = declared.get("backend") if declared.get("backend") in metrics["backends"] else _best_backend(metrics)
    models = metrics["backends"][backend]
    two_sets = all("test_unseen_accuracy_mean" in m for m in models.values())
    rows = []
    for variant, m in models.items():
        if two_sets:
            acc = [m["test_seen_accuracy_mean"], m["test_unseen_accuracy_mean"], m["drop_accuracy_mean"]]
        else:
            acc = [m.get("test_accuracy_mean", float("nan"))]
        rows.append([f"`{variant}`", *(f"{x:.3f}" for x in acc)])
    header = ["model", "seen accuracy", "unseen accuracy", "drop"] if two_sets else ["model", "test accuracy"]
    runs = metrics.get("independent_runs") or max(m["seeds"] for m in models.values())
    data = "Built-in simulated data" if ingest.get("source") == "simulator" else f"Data from `{ingest['raw_dir']}`"
    lines = [
        f"{data}: {n(ingest['log_rows'])} takes, {n(ingest['accepted'])} accepted by ingest "
        f"({ingest['accepted_subjects']} subjects), {n(qa['labels']['accepted'])} with an accepted QA label; "
        f"the release holds {n(release['takes'])} takes of {release['subjects']} subjects.",
        "",
    ]
    if primary.get("status") == "run":
        lines += [f"**{primary['sentence']}**", ""]
    elif primary:
        lines += [f"Primary (pre-registered) test not run: {primary.get('reason')}.", ""]
    lines += [
        f"Protocol `{metrics.get('protocol', 'unseen_mode')}`, features `{backend}`, mean over {runs} independent "
        f"runs ({len(metrics['classes'])} classes):",
        "",
        *table(header, rows),
        "",
    ]
    secondary = metrics.get("secondary") or {}
    if secondary.get("comparisons"):
        hits = [k for k, c in secondary["comparisons"].items() if c.get("significant")]
        lines += [
            f"Secondary comparisons, Holm-corrected over {secondary['family']}: "
            + (f"{len(hits)} below {secondary['alpha']} ({', '.join(f'`{h}`' for h in hits)})" if hits else "none")
            + " (exploratory; every one is listed on the experiment page).",
            "",
        ]
    elif not primary:
        verdict = metrics.get("verdicts", {}).get(backend, {}).get("mv_lstm_vs_lstm")
        if verdict:
            lines += [verdict["sentence"], ""]
    lines.append(source(metrics, "metrics", "ingest", "qa", "release"))
    return "\n".join(lines)


def block_capture(r: Reports) -> str:
    c = r.load("capture")
    lines = [
        f"{c['n_subjects']} subjects, {n(c['n_performances'])} performances, **{n(c['n_takes'])} takes**, "
        f"{n(c['n_frames'])} frames of {c['frame_size']}x{c['frame_size']} px, rendered in {c['wall_s']:.0f} s wall "
        f"({c['cpu_s']:.0f} CPU-seconds, {c['workers']} workers): {c['frames_per_s_per_core']:.1f} frames/s per core, "
        "mp4 encoding and ground truth included.",
        "",
        source(c, "capture"),
    ]
    return "\n".join(lines)


def _pose_light_table(by_mode: dict[str, dict[str, Any]], key: str, fmt: Callable[[float], str]) -> list[str]:
    poses = sorted({m.split("/")[0] for m in by_mode}, key=lambda p: list(POSE).index(p) if p in POSE else 99)
    lights = sorted({m.split("/")[1] for m in by_mode})
    rows = []
    for p in poses:
        rows.append(
            [pose_name(p)] + [fmt(by_mode[f"{p}/{li}"][key]) if f"{p}/{li}" in by_mode else "" for li in lights]
        )
    return table(["pose \\ light", *lights], rows)


def block_capture_verify(r: Reports) -> str:
    v = r.load("capture_verify")
    det, overall = v["detector"], v["overall"]["all"]
    tones = v.get("skin_tone", {})
    lines = [
        f"{det['name'].upper()} on every {det['every_nth_frame']}th frame ({n(overall['frames'])} frames) finds the "
        f"simulated face in **{pct(overall['detection_rate'])}** of them; 5-point NME against the simulator's truth "
        f"{overall['nme_mean']:.3f} of the inter-ocular distance. Detection rate per mode:",
        "",
        *_pose_light_table(v["mode"], "detection_rate", pct),
        "",
    ]
    if tones:
        lines += [
            "Per skin tone (0 lightest): "
            + ", ".join(f"{t.removeprefix('tone')}: {pct(x['detection_rate'])}" for t, x in tones.items())
            + ".",
            "",
        ]
    lines.append(source(v, "capture_verify"))
    return "\n".join(lines)


def block_ingest(r: Reports) -> str:
    g = r.load("ingest")
    reasons = ", ".join(f"`{k}` {n(x)}" for k, x in g.get("quarantined_by_reason", {}).items()) or "none"
    lines = [
        f"{n(g['log_rows'])} log rows, {n(g['files_found'])} files found, {n(g['manifest_rows'])} manifest rows "
        f"(the accounting adds up: {str(g['accounting']['adds_up']).lower()}); **{n(g['accepted'])} accepted** "
        f"({n(g['accepted_frames'])} frames, {g['accepted_subjects']} subjects), {n(g['quarantined'])} quarantined "
        f"({reasons}). Raw folder `{g['raw_dir']}`, source `{g.get('source', 'unknown')}`.",
        "",
        source(g, "ingest"),
    ]
    return "\n".join(lines)


def block_align(r: Reports) -> str:
    a = r.load("align")
    flagged = ", ".join(f"`{k}` {x}" for k, x in a.get("flagged_by_reason", {}).items()) or "none"
    lines = [
        f"Detector `{a['detector']}`, executor `{a['executor']}`: {n(a['takes'])} takes ({n(a['takes_processed'])} "
        f"processed, {n(a['takes_up_to_date'])} up to date), {n(a['takes_ok'])} ok, {n(a['takes_flagged'])} flagged "
        f"({flagged}); {n(a['frames'])} frames, a face in {pct(a['frame_detection_rate'], 2)} of them: "
        f"{n(a['frames_detected'])} detected, {n(a['frames_tracked'])} tracked, {n(a['frames_contrast_stretched'])} "
        f"contrast-stretched. Stage wall time {a['wall_s']:.0f} s, of which {a['integrity_check_s']:.2f} s checking "
        "the hashes of existing outputs.",
        "",
        source(a, "align"),
    ]
    return "\n".join(lines)


def block_align_accuracy(r: Reports) -> str:
    a = r.load("align_accuracy")
    o = a["overall"]["all"]
    worst = max(a["mode"], key=lambda m: a["mode"][m]["nme_mean"])
    by_pose = ", ".join(f"{pose_name(p)} {x['nme_mean']:.3f}" for p, x in a["pose"].items())
    by_light = ", ".join(f"{li} {x['nme_mean']:.3f}" for li, x in a["illumination"].items())
    lines = [
        f"Against the simulator's truth ({n(o['frames'])} frames): a face is found in {pct(o['detection_rate'], 2)} "
        f"of frames (every mode at least {pct(min(x['detection_rate'] for x in a['mode'].values()), 2)}); 5-point NME "
        f"{o['nme_mean']:.3f} of the inter-ocular distance overall (median {o['nme_median']:.3f}); by pose {by_pose}; "
        f"by light {by_light}. Worst mode: {pose_name(worst.split('/')[0])} under the {worst.split('/')[1]} light "
        f"(NME {a['mode'][worst]['nme_mean']:.3f}). Mean NME per mode:",
        "",
        *_pose_light_table(a["mode"], "nme_mean", lambda x: f"{x:.3f}"),
        "",
        source(a, "align_accuracy"),
    ]
    return "\n".join(lines)


def block_media(r: Reports) -> str:
    m = r.load("media")
    per_take = m.get("encode_s_per_take")  # None when the run encoded nothing (every proxy up to date)
    cost = f"{per_take:.2f} s per take per worker, " if per_take is not None else ""
    lines = [
        f"{n(m['proxies'])} proxies for {n(m['takes'])} takes ({n(m['frames'])} frames): {n(m['proxies_made'])} made, "
        f"{n(m['proxies_up_to_date'])} up to date, {len(m['failed'])} failed; {m['bytes'] / 1e6:.0f} MB; "
        f"{cost}{m['wall_s']:.1f} s wall on {m['workers']} workers. Encoder: {m['encoder']}.",
        "",
        source(m, "media"),
    ]
    return "\n".join(lines)


def block_qa(r: Reports) -> str:
    q = r.load("qa")
    ag, truth, labels = q["agreement"], q["against_truth"], q["labels"]
    per_class = ", ".join(f"{c} {x:.2f}" for c, x in ag["krippendorff_alpha_per_class"].items() if x is not None)
    cohen = ", ".join(f"{pair.replace('|', '-')} {x['kappa']:.2f}" for pair, x in ag["cohen_kappa_pairwise"].items())
    flagged = "; ".join(f"{f['annotator']}: {f['reasons']}" for f in q.get("annotators_flagged", [])) or "none"
    excluded = ", ".join(f"{k.replace('_', ' ')} {n(x)}" for k, x in q.get("excluded", {}).items())
    alpha, alpha_unflagged = ag["krippendorff_alpha"], ag["krippendorff_alpha_without_flagged_annotators"]
    accepted, queued, share = labels["accepted"], labels["reannotate"], labels["accepted"] / q["tasks"]
    rows = [
        [
            "tasks / annotations used / gold",
            f"{n(q['tasks'])} / {n(q['annotations_used'])} / {n(q['gold_annotations'])}",
        ],
        ["annotations excluded", excluded or "none"],
        [
            "Krippendorff's alpha (all annotators / without the flagged ones)",
            f"{alpha:.3f} ({ag['verdict']}) / {alpha_unflagged:.3f}",
        ],
        ["alpha per class (one vs rest)", per_class],
        [
            f"Fleiss' kappa ({n(ag['fleiss_items'])} items with {ag['fleiss_raters_per_item']} ratings)",
            f"{ag['fleiss_kappa']:.3f}",
        ],
        ["Cohen's kappa per annotator pair", cohen],
        ["flagged annotators", flagged],
        [
            f"label accuracy against the simulator's truth ({n(truth['items'])} items)",
            f"**Dawid-Skene {truth['dawid_skene_accuracy']:.3f}**, majority vote {truth['majority_vote_accuracy']:.3f}",
        ],
        [
            "labels accepted / queued for re-annotation",
            f"**{n(accepted)} / {n(queued)}** ({pct(share)} accepted, "
            f"{pct(truth['accepted_label_accuracy'])} of them right against the truth)",
        ],
    ]
    return "\n".join([*table(["", "value"], rows), "", source(q, "qa")])


def block_splits(r: Reports) -> str:
    s = r.load("splits")
    excluded = ", ".join(f"{k.replace('_', ' ')} {n(x)}" for k, x in s["excluded"].items() if isinstance(x, int))
    folds = ", ".join(f"`{p}` {len({e['fold'] for e in entries})} folds" for p, entries in s["protocols"].items())
    lines = [
        f"{n(s['eligible_takes'])} eligible takes of {s['subjects']} subjects in {len(s['modes'])} modes, "
        f"{len(s['classes'])} classes, labels: {s['labels']} (excluded: {excluded}). Protocols: {folds}.",
        "",
        source(s, "splits"),
    ]
    return "\n".join(lines)


def _results_table_module() -> ModuleType:
    """`scripts/results_table.py`, which already prints the result tables: reused, not rewritten."""
    spec = importlib.util.spec_from_file_location("results_table", ROOT / "scripts" / "results_table.py")
    if spec is None or spec.loader is None:
        raise ImportError("scripts/results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def block_results(r: Reports) -> str:
    metrics = r.load("metrics")
    body = _results_table_module().tables(metrics).rstrip("\n")
    head = (
        f"Protocol `{metrics['protocol']}`, labels: {metrics['labels']}, feature-extractor seeds "
        f"{metrics.get('feature_seeds')}, {len(metrics['classes'])} classes (chance {1 / len(metrics['classes']):.3f})."
    )
    return "\n".join([head, "", body, "", source(metrics, "metrics")])


def block_features(r: Reports) -> str:
    f = r.load("features")
    ex = f["extractors"]
    fit, busy = sum(e.get("fit_seconds", 0.0) for e in ex), sum(e.get("seconds", 0.0) for e in ex)
    backends = ", ".join(f"`{b}`" for b in f["backends"])
    lines = [
        f"{len(ex)} extractors ({backends} x seeds {f['seeds']} x folds), protocol `{f['protocol']}`: "
        f"{f['seconds']:.0f} s wall; the workers spent {n(busy)} s on the extractors, {n(fit)} s of it fitting "
        "the frame CNNs.",
        "",
        source(f, "features"),
    ]
    return "\n".join(lines)


def block_release(r: Reports) -> str:
    rel = r.load("release")
    takes_ex = ", ".join(f"{k.replace('_', ' ')} {n(x)}" for k, x in rel.get("takes_excluded", {}).items()) or "none"
    subj_ex = ", ".join(f"{k.replace('_', ' ')} {n(x)}" for k, x in rel.get("subjects_excluded", {}).items()) or "none"
    lines = [
        f"`{rel['name']}` (data source: {rel['data_source']}): **{n(rel['takes'])} takes of {rel['subjects']} "
        f"subjects**, {n(rel['frames'])} frames, {n(rel['labels_accepted'])} accepted labels. Takes left out: "
        f"{takes_ex}; subjects left out: {subj_ex}. Archive `{rel['archive']}`, sha256 `{rel['archive_sha256']}`.",
        "",
        source(rel, "release"),
    ]
    return "\n".join(lines)


def block_timings(r: Reports) -> str:
    """Stage wall times that the stages themselves record (the others are in the history section)."""
    rows: list[list[str]] = []
    for name, key, what in (
        ("capture", "wall_s", "render the simulated capture"),
        ("align", "wall_s", "detect, track and align every accepted take"),
        ("media", "wall_s", "encode the browser proxies"),
        ("features", "seconds", "train and run the frame feature extractors"),
    ):
        try:
            rep = r.load(name)
        except RenderError:
            continue
        machine = (rep.get("provenance") or {}).get("machine") or {}
        where = f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores" if machine else "not recorded"
        done = {
            "capture": f"{n(rep.get('n_takes', 0))} takes",
            "align": f"{n(rep.get('takes_processed', 0))} of {n(rep.get('takes', 0))} takes processed",
            "media": f"{n(rep.get('proxies_made', 0))} of {n(rep.get('proxies', 0))} proxies made",
            "features": f"{len(rep.get('extractors', []))} extractors",
        }[name]
        rows.append([f"`{name}`", f"{what} ({done})", f"{rep[key]:.1f} s", where])
    lines = [*table(["stage", "work", "wall time", "machine"], rows), ""]
    names = [name for name in ("capture", "align", "media", "features") if (r.folder / f"{name}.json").exists()]
    lines.append(source({}, *names, detail="machine per row, from each report's provenance block"))
    return "\n".join(lines)


def block_run_log(r: Reports) -> str:
    """The last `make run` as its own log recorded it (`scripts/timed_repro.py`): every stage, ran or skipped."""
    run = r.load("run")
    rows = [
        [f"`{row['stage']}`", row["status"], f"{row['wall_s']:.1f} s" if row["status"] == "ran" else "-"]
        for row in run["stages"]
    ]
    ran = [row for row in run["stages"] if row["status"] == "ran"]
    m = run.get("machine") or {}
    lines = [
        *table(["stage", "status", "wall time"], rows),
        "",
        f"**{run['total_s'] / 60:.1f} min** for `{run['command']}` ({len(ran)} of {len(rows)} stages ran; exit "
        f"status {run['exit_status']}), started {run['started_utc']} on {m.get('cpu', '?')}, {m.get('cores', '?')} "
        f"cores; load average at the end {', '.join(str(x) for x in run.get('load_average_at_end', []))}; commit "
        f"`{str(run.get('commit', '?'))[:12]}`.",
        "",
        source(run, "run", detail="written by `scripts/timed_repro.py`, which `make run` calls"),
    ]
    return "\n".join(lines)


def block_recordings_walkthrough(r: Reports) -> str:
    """docs/recordings.md's four commands on issue 21's pilot, timed as typed (`scripts/bench_recordings.py`)."""
    sys.path.insert(0, str(ROOT))
    from pipeline.stages import STAGES

    b = r.load("bench/recordings")
    steps = b["steps"]
    rows = []
    for i, s in enumerate(steps, 1):
        note = f" ({s['note']})" if s.get("note") else ""
        rows.append([str(i), f"`{s['command']}`", f"{s['wall_s']:.1f} s{note}"])
    stages = [row for s in steps for row in s.get("stages", [])]
    ran = [row for row in stages if row["status"] == "ran"]
    simulator = {s.name for s in STAGES if s.branch == "simulator"} & {row["stage"] for row in stages}
    by_stage = ", ".join(
        f"{row['stage']} {row['wall_s']:.1f} s" if row["status"] == "ran" else f"{row['stage']} skipped"
        for row in stages
    )
    pilot, tr = b["pilot"], b["training"]
    f, t = tr["features"], tr["train"]
    how = "as `mvfer init` writes params.yaml" if tr["mode"] == "params" else "reduced as in the integration test"
    prov = b["provenance"]
    m = prov["machine"]
    load = prov["load_average_start"]
    lines = [
        *table(["", "command", "wall time"], rows),
        "",
        f"`dvc repro` ran {len(ran)} of {len(stages)} stages"
        + (f", simulator stages among them: {', '.join(sorted(simulator))}" if simulator else ", no simulator stage")
        + f": {by_stage}. The pilot ({pilot['clips']} clips of {pilot['subjects']} subjects at {pilot['fps']} fps, "
        f"rendered beforehand in {pilot['build_s']:.1f} s) gave {pilot['accepted_by_ingest']} takes accepted by "
        f"ingest and {pilot['released_takes']} released. Training {how}: features `{'`, `'.join(f['backends'])}` x "
        f"{len(f['seeds'])} seeds, {f['epochs']} epochs; models `{'`, `'.join(t['variants'])}` x {len(t['seeds'])} "
        f"seeds, {t['epochs']} epochs. **{b['total_s']:.0f} s** for the four commands on {m['cpu']}, {m['cores']} "
        f"cores, load average {', '.join(str(x) for x in load)} at the start "
        f"({', '.join(str(x) for x in prov['load_average_end'])} at the end).",
        "",
        source(
            b,
            "bench/recordings",
            detail=f"{prov['date']}; {m['cpu']}, {m['cores']} cores; commit `{str(prov['commit'])[:12]}`"
            f"{'+dirty' if str(prov['commit']).endswith('+dirty') else ''}; written by `scripts/bench_recordings.py`",
        ),
    ]
    return "\n".join(lines)


def block_run_total(r: Reports) -> str:
    """One line for the README: how long the last `make run` took, where, on which commit."""
    run = r.load("run")
    m = run.get("machine") or {}
    ran = sum(row["status"] == "ran" for row in run["stages"])
    return (
        f"The last `make run` (after the install, {ran} of {len(run['stages'])} stages run) took "
        f"**{run['total_s'] / 60:.1f} min** on {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {run['started_utc']}, "
        f"commit `{str(run.get('commit', '?'))[:12]}`: stage by stage in [benchmarks](docs/benchmarks.md).\n\n"
        + source(run, "run", detail="written by `scripts/timed_repro.py`, which `make run` calls")
    )


def block_scaling(r: Reports) -> str:
    """CPU time per take and peak memory of the data stages at 1x, 2x and 4x the subjects (scripts/bench_scaling.py)."""
    b = Reports(r.folder / "bench").load("scaling")
    scales = b["scales"]
    rows = []
    for stage, fit in b["fit"].items():
        at = {row["scale"]: row for row in b["rows"] if row["stage"] == stage}
        rows.append(
            [
                f"`{stage}`",
                *(f"{at[k]['cpu_ms_per_take']:.0f} ms" for k in scales if k in at),
                f"{fit['cpu_startup_s']:.1f} s + {fit['cpu_ms_per_take']:.0f} ms/take",
                *(f"{at[k]['peak_rss_mib']:.0f}" for k in scales if k in at),
            ]
        )
    takes = {row["scale"]: row["takes"] for row in b["rows"]}
    header = [
        "stage",
        *(f"CPU/take {k}x ({takes[k]} takes)" for k in scales),
        "start-up + marginal",
        *(f"peak MiB {k}x" for k in scales),
    ]
    m = b["machine"]
    lines = [
        *table(header, rows),
        "",
        f"{b['base_subjects']} subjects at 1x; {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {b['date']}, commit "
        f"`{str(b['commit'])[:12]}`. Definition: {b['definition']}.",
        "",
        source({}, "bench/scaling", detail="written by `scripts/bench_scaling.py --json reports/bench/scaling.json`"),
    ]
    return "\n".join(lines)


def block_scaling_summary(r: Reports) -> str:
    """The README's line on scaling: marginal CPU per take and memory growth from 1x to 4x, with the machine."""
    b = Reports(r.folder / "bench").load("scaling")
    lo, hi = min(b["scales"]), max(b["scales"])
    parts = [
        f"{stage} {fit['cpu_ms_per_take']:.0f} ms (peak memory x{fit['peak_rss_growth']:.2f})"
        for stage, fit in b["fit"].items()
    ]
    m = b["machine"]
    per_take = {(row["stage"], row["scale"]): row["cpu_ms_per_take"] for row in b["rows"]}
    # linear: the largest size costs no more per take than the smallest (start-up only amortises), memory flat
    linear = all(per_take[(st, hi)] <= 1.15 * per_take[(st, lo)] for st in b["fit"]) and all(
        fit["peak_rss_growth"] < 1.10 for fit in b["fit"].values()
    )
    verdict = (
        "the data stages' CPU time per take stays flat and their memory does not grow"
        if linear
        else "**some data stage's CPU time per take or memory grows** (see the table)"
    )
    return (
        f"Cost grows with the work: from {lo}x to {hi}x the subjects {verdict}; marginal CPU per take: "
        f"{', '.join(parts)} ({m.get('cpu', '?')}, "
        f"{m.get('cores', '?')} cores, {b['date'][:10]}; table in [benchmarks](docs/benchmarks.md)).\n\n"
        + source({}, "bench/scaling", detail="written by `scripts/bench_scaling.py`")
    )


def block_probes(r: Reports) -> str:
    """The default run's linear probes: what h_T, m_T and the features hold of each mode factor."""
    metrics = r.load("metrics")
    pr = metrics.get("probes")
    if not pr:
        raise RenderError("reports/metrics.json has no probes (rerun evaluate)")
    lines = [f"Method: {pr['method']}.", ""] + [f"- {f}" for f in pr["findings"]] + [""]
    lines += probe_table(pr["results"])
    return "\n".join([*lines, "", source(metrics, "metrics")])


def probe_table(results: dict[str, Any]) -> list[str]:
    """Probe accuracy (mean +- SD over runs) per representation (rows) and mode factor (columns), chance in the
    header: one table for the default run's metrics and for each study experiment."""
    cells = [
        (f"{b} {v}" if v == rep else f"{b} {v} {rep}", f, s)
        for b, vs in results.items()
        for v, reps in vs.items()
        for rep, fs in reps.items()
        for f, s in fs.items()
    ]
    factors = sorted({f for _, f, _ in cells})
    chance = {f: next(s["chance"] for _, g, s in cells if g == f) for f in factors}
    rows: dict[str, dict[str, str]] = {}
    for label, f, s in cells:
        rows.setdefault(label, {})[f] = _pm_cell({"mean": s["accuracy_mean"], "sd": s.get("accuracy_sd")})
    header = ["representation"] + [f"{f} (chance {chance[f]:.2f})" for f in factors]
    return table(header, [[label] + [r.get(f, "n/a") for f in factors] for label, r in rows.items()])


def _pm_cell(x: dict[str, Any] | None) -> str:
    if not x:
        return "n/a"
    return f"{x['mean']:.3f}" + (f" +- {x['sd']:.3f}" if x.get("sd") is not None else "")


def block_study(r: Reports) -> str:
    """The study (reports/study.json, scripts/study_report.py): every experiment, every variant, one Holm family."""
    st = r.load("study")
    gen = st["generated"]
    cpu = gen["machine"]
    detail = f"{gen['date']}, {cpu.get('cpu', '?')}, {cpu.get('cores', '?')} cores; code {gen['commit']}"
    lines = []
    if st.get("scale"):
        sets = ", ".join(f"`{k}` {json.dumps(v)}" for k, v in (st.get("scale_settings") or {}).items())
        lines += [f"Scale `{st['scale']}`, the same for every experiment and variant: {sets}.", ""]
    for name in st.get("order") or list(st["experiments"]):
        e = st["experiments"][name]
        if "missing" in e:
            lines += [f"**{name}**: not in this report ({e['missing']}).", ""]
            continue
        own = {
            k: v
            for k, v in e["settings"].items()
            if k in ("features.protocol", "features.crossfit_folds", "features.encoding")
        }
        lines += [
            f"**{name}**: protocol `{e['protocol']}`, "
            + ", ".join(f"`{k}` {v}" for k, v in own.items() if k != "features.protocol")
            + f"; {e['independent_runs']} independent runs; labels: {e['labels']}; "
            f"code at `{str(e.get('baseline'))[:12]}`, experiment commit `{str(e['commit'])[:12]}`.",
            "",
        ]
        tests = [t for t in ("test", "test_seen", "test_unseen") if any(row.get(t) for row in e["variants"])]
        header = ["model"] + [f"{t} acc (QA labels)" for t in tests] + [f"{t} acc (truth)" for t in tests]
        header += ["drop"] if "test_unseen" in tests else []
        header += ["skin tones (lowest-highest, first test set)"]
        rows = []
        for row in e["variants"]:
            cells = [f"{row['backend']} {row['variant']}"] + [_pm_cell(row.get(t)) for t in tests]
            cells += [("n/a" if row.get(f"{t}_vs_truth") is None else f"{row[f'{t}_vs_truth']:.3f}") for t in tests]
            cells += [_pm_cell(row.get("drop"))] if "test_unseen" in tests else []
            tone = row.get(f"{tests[0]}_skin_tone_range") if tests else None
            cells.append("n/a" if not tone else f"{tone[0]:.2f}-{tone[1]:.2f}")
            rows.append(cells)
        lines += table(header, rows) + [""]
        if e.get("probes"):
            lines += probe_table(e["probes"]) + [""]
    comps = sorted(
        st["comparisons"],
        key=lambda c: (c["p_holm_study"] is None, c["p_holm_study"] or 0.0, c["p_value"] or 0.0),
    )
    lines += [
        f"**Comparisons** ({st['n_comparisons']} tested; {st['family']}; alpha {st['alpha']}; "
        "effects in accuracy, joint bootstrap over test subjects and runs):",
        "",
    ]

    def num(x: float | None, fmt: str = "{:.3g}") -> str:
        return "n/a" if x is None else fmt.format(x)

    lines += table(
        ["experiment", "comparison", "endpoint", "effect", "95 % CI", "p", "p (Holm, experiment)", "p (Holm, study)"],
        [
            [
                c["experiment"],
                f"{c['backend']}: {c['candidate']} vs {c['baseline']}",
                c["endpoint"],
                num(c["estimate"], "{:+.3f}"),
                "n/a" if not c["ci95"] else f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]",
                num(c["p_value"]),
                "its primary" if c.get("primary_in_experiment") else num(c["p_holm_experiment"]),
                num(c["p_holm_study"]) + (" *" if c["significant_study"] else ""),
            ]
            for c in comps
        ],
    )
    significant = sum(1 for c in comps if c["significant_study"])
    lines += [
        "",
        f"{significant} of {st['n_comparisons']} comparisons are significant after the study-wide correction "
        "(marked *).",
    ]
    return "\n".join([*lines, "", source(st, "study", detail=detail)])


BLOCKS: dict[str, Callable[[Reports], str]] = {
    "stages": block_stages,
    "stage_io": block_stage_io,
    "headline": block_headline,
    "capture": block_capture,
    "capture_verify": block_capture_verify,
    "ingest": block_ingest,
    "align": block_align,
    "align_accuracy": block_align_accuracy,
    "media": block_media,
    "qa": block_qa,
    "splits": block_splits,
    "results": block_results,
    "features": block_features,
    "release": block_release,
    "timings": block_timings,
    "run_log": block_run_log,
    "run_total": block_run_total,
    "scaling": block_scaling,
    "scaling_summary": block_scaling_summary,
    "recordings_walkthrough": block_recordings_walkthrough,
    "probes": block_probes,
    "study": block_study,
}


# --- files ------------------------------------------------------------------------------------------------------


def documents(root: Path) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def render_text(text: str, reports: Reports, cache: dict[str, str]) -> tuple[str, list[str]]:
    """`text` with every block re-rendered; also the names of unknown or unclosed blocks."""
    problems = []
    for name in BEGIN.findall(text):
        if name not in BLOCKS:
            problems.append(f"unknown block {name!r}")
    closed = {m.group("name") for m in BLOCK.finditer(text)}
    problems += [f"block {name!r} has no END marker" for name in BEGIN.findall(text) if name not in closed]

    def fill(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            return m.group(0)
        if name not in cache:
            try:
                cache[name] = BLOCKS[name](reports)
            except (KeyError, TypeError, ValueError, IndexError) as e:  # a report without a figure the block shows
                raise RenderError(f"block {name!r} cannot be rendered: {type(e).__name__} {e} in its report") from e
        return f"{m.group(1)}{cache[name]}\n{m.group(4)}"

    return BLOCK.sub(fill, text), problems


def stale_blocks(old: str, new: str) -> list[str]:
    """Names of the blocks whose body differs between two renderings of the same file."""
    before = {m.group("name"): m.group("body") for m in BLOCK.finditer(old)}
    after = {m.group("name"): m.group("body") for m in BLOCK.finditer(new)}
    return [name for name in after if before.get(name) != after[name]]


def run(root: Path, reports: Reports, check: bool) -> int:
    cache: dict[str, str] = {}
    failures = []
    for path in documents(root):
        if not path.exists():
            continue
        old = path.read_text(encoding="utf-8")
        try:
            new, problems = render_text(old, reports, cache)
        except RenderError as e:
            failures.append(f"{path.relative_to(root)}: {e}")
            continue
        failures += [f"{path.relative_to(root)}: {p}" for p in problems]
        if new == old:
            continue
        if check:
            failures += [
                f"{path.relative_to(root)}: block {name!r} is stale (differs from what its report gives)"
                for name in stale_blocks(old, new)
            ]
        else:
            path.write_text(new, encoding="utf-8")
            log.info("rendered %s", path.relative_to(root))
    for line in failures:
        log.error("%s", line)
    if failures and check:
        log.error("run `python scripts/render_docs.py` and commit the result")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 naming every stale block")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root holding README.md and docs/")
    parser.add_argument("--reports", type=Path, default=None, help="reports folder (default: ROOT/reports)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(args.root, Reports(args.reports or args.root / "reports"), args.check)


if __name__ == "__main__":
    raise SystemExit(main())
