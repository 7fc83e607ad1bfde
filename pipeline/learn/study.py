"""The study report: every experiment of params.study.yaml read back from its `metrics.json`, one table.

Why one report: each experiment's evaluate Holm-corrects its own comparisons, but a reader of the study
sees all of them at once, so the study corrects them again as one family (every comparison of every
experiment, Holm). The pre-registered primary test is the default run's (params.yaml), not the study's:
inside the study every comparison is secondary, the same pair on the primary protocol included.
No number here is computed anew from predictions: the report gathers what each experiment's
evaluate wrote, so the figures are those `dvc exp show` gives.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import PipelineError
from pipeline.learn.stats import holm


class StudyError(PipelineError, ValueError):
    """A study file or a name in it that does not hold (one line, naming the file and the key)."""


def settings(
    study: dict[str, Any], scale: str | None = None, only: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Experiment name -> every setting it runs with (common, then the scale's, then its own).

    With a scale the experiment is named `SCALE-NAME`, so a reduced run never passes for the full one.
    """
    scales = study.get("scales", {})
    if scale is not None and scale not in scales:
        raise StudyError(f"params.study.yaml: no scale {scale!r} (scales: {', '.join(scales) or 'none'})")
    unknown = [n for n in only or [] if n not in study["experiments"]]
    if unknown:
        raise StudyError(
            f"params.study.yaml: no experiment {unknown[0]!r} (experiments: {', '.join(study['experiments'])})"
        )
    return {
        name if scale is None else f"{scale}-{name}": {
            **study.get("common", {}),
            **(scales[scale] if scale else {}),
            **own,
        }
        for name, own in study["experiments"].items()
        if not only or name in only
    }


FAMILY_NOTE = "every comparison of every experiment of the study, Holm-corrected as one family"


def _acc(m: dict[str, Any], test: str) -> dict[str, float | None] | None:
    if f"{test}_accuracy_mean" not in m:
        return None
    return {"mean": m[f"{test}_accuracy_mean"], "sd": m.get(f"{test}_accuracy_std")}


def variant_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per backend x variant: accuracy on each test set (QA labels and simulator truth), the drop, skin tones."""
    rows = []
    truth = (metrics.get("against_truth") or {}).get("backends", {})
    tones = metrics.get("per_skin_tone_accuracy") or {}
    for backend, variants in metrics["backends"].items():
        for variant, m in variants.items():
            row: dict[str, Any] = {"backend": backend, "variant": variant, "runs": m.get("independent_runs")}
            for test in metrics["test_sets"]:
                row[test] = _acc(m, test)
                t = truth.get(backend, {}).get(variant, {}).get(test)
                row[f"{test}_vs_truth"] = None if t is None else t.get("accuracy_vs_truth_mean")
                by_tone = tones.get(backend, {}).get(variant, {}).get(test)
                row[f"{test}_skin_tone_range"] = None if not by_tone else [min(by_tone.values()), max(by_tone.values())]
            row["drop"] = (
                None
                if "drop_accuracy_mean" not in m
                else {"mean": m["drop_accuracy_mean"], "sd": m.get("drop_accuracy_std")}
            )
            rows.append(row)
    return rows


def comparisons_of(name: str, metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every comparison the experiment tested (its primary counted as one more secondary), keyed `name/...`."""
    out = {}
    pr = metrics.get("primary") or {}
    if pr.get("status") == "run":
        key = f"{pr['backend']}/{pr['candidate']}_vs_{pr['baseline']}/{pr['endpoint']}"
        out[f"{name}/{key}"] = {**pr, "primary_in_experiment": True}
    for key, c in (metrics.get("secondary") or {}).get("comparisons", {}).items():
        out.setdefault(f"{name}/{key}", c)
    return out


def collect(experiments: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The study report from `name -> {"settings", "ref", "commit", "metrics"}` (metrics: its metrics.json).

    An experiment without metrics (not run yet, or failed) is listed as missing with its reason, never dropped.
    """
    done = {n: e for n, e in experiments.items() if e.get("metrics") is not None}
    for n, e in done.items():
        missing = [k for k in ("protocol", "backends", "test_sets") if k not in e["metrics"]]
        if missing:
            raise StudyError(f"experiment {n} ({str(e.get('commit'))[:12]}): metrics.json has no field {missing[0]!r}")
    tested: dict[str, dict[str, Any]] = {}
    for name, e in done.items():
        tested.update(comparisons_of(name, e["metrics"]))
    adjusted = holm({k: c.get("p_value") for k, c in tested.items()})
    comparisons = []
    for key, c in tested.items():
        name = key.split("/", 1)[0]
        absent = [f for f in ("backend", "candidate", "baseline", "endpoint") if f not in c]
        if absent:
            raise StudyError(f"experiment {name}: comparison {key} in metrics.json has no field {absent[0]!r}")
        p_study = adjusted[key]
        comparisons.append(
            {
                "experiment": name,
                "protocol": c.get("protocol"),
                "backend": c["backend"],
                "candidate": c["candidate"],
                "baseline": c["baseline"],
                "endpoint": c["endpoint"],
                "estimate": c.get("estimate"),
                "ci95": c.get("ci95"),
                "p_value": c.get("p_value"),
                "p_holm_experiment": c.get("p_holm"),
                "p_holm_study": None if p_study is None else round(p_study, 4),
                "reason": c.get("reason"),
                "primary_in_experiment": bool(c.get("primary_in_experiment")),
            }
        )
    alpha = next((e["metrics"].get("secondary", {}).get("alpha") for e in done.values()), 0.05) or 0.05
    for c in comparisons:
        c["significant_study"] = c["p_holm_study"] is not None and c["p_holm_study"] < alpha
    return {
        "order": list(experiments),  # the study file's order (a JSON writer may sort the keys)
        "family": FAMILY_NOTE,
        "alpha": alpha,
        "n_comparisons": sum(1 for c in comparisons if c["p_value"] is not None),
        "experiments": {
            name: {
                "settings": e.get("settings", {}),
                "ref": e.get("ref"),
                "commit": e.get("commit"),
                "baseline": e.get("baseline"),
                **(
                    {
                        "protocol": e["metrics"]["protocol"],
                        "labels": e["metrics"].get("labels"),
                        "independent_runs": e["metrics"].get("independent_runs"),
                        "variants": variant_rows(e["metrics"]),
                        "probes": (e["metrics"].get("probes") or {}).get("results"),
                        "probe_findings": (e["metrics"].get("probes") or {}).get("findings", []),
                        "provenance": e["metrics"].get("provenance"),
                    }
                    if e.get("metrics") is not None
                    else {"missing": e.get("missing", "no metrics.json")}
                ),
            }
            for name, e in experiments.items()
        },
        "comparisons": comparisons,
    }
