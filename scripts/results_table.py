"""Print README's result tables from reports/metrics.json (so the README is regenerated, not retyped).

python scripts/results_table.py [reports/metrics.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {
    "lstm": "LSTM (`torch.nn.LSTM`)",
    "mv_lstm": "MV-LSTM",
    "mv_lstm_att": "attentive MV-LSTM",
    "mv_lstm_sup": "MV-LSTM + mode supervision",
}


def _pm(m: dict, key: str) -> str:
    if key + "_mean" not in m:
        return "n/a"
    sd = m.get(key + "_std")
    return f"{m[key + '_mean']:.3f} +- {sd:.3f}" if sd is not None else f"{m[key + '_mean']:.3f}"


def inference(report: dict) -> list[str]:
    """The primary test's sentence, then the secondary comparisons (Holm-corrected) as a table."""
    pr = report["primary"]
    lines = ["**Primary test** (declared in params.yaml `experiment.primary` before any result was seen):", ""]
    if pr.get("status") == "run":
        lines.append(f"- {pr['sentence']}")
    else:
        lines.append(f"- not run in this evaluation: {pr.get('reason')}")
    sec = report["secondary"]
    lines += [
        "",
        f"**Secondary comparisons** ({sec['family']}, Holm-corrected; exploratory, joint bootstrap over test subjects "
        "and independent runs):",
        "",
        "| comparison | endpoint | effect | 95 % CI | p | p (Holm) |",
        "|---|---|---|---|---|---|",
    ]
    for c in sec["comparisons"].values():
        ci = c.get("ci95")
        interval = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci and None not in ci else "not testable"
        p, p_holm = c.get("p_value"), c.get("p_holm")
        lines.append(
            f"| {c['backend']}: {c['candidate']} vs {c['baseline']} | {c['endpoint']} | {c['estimate']:+.3f} | "
            f"{interval} | {'-' if p is None else f'{p:.3g}'} | {'-' if p_holm is None else f'{p_holm:.3g}'} |"
        )
    return lines + [""]


def tables(report: dict) -> str:
    lines = inference(report) if "primary" in report else []
    for backend, models in report["backends"].items():
        seeds = max(m["seeds"] for m in models.values())
        lines += [
            f"**Features `{backend}`** ({seeds} seeds, mean +- std over seeds):",
            "",
            "| model | seen acc | unseen acc | seen macro-F1 | unseen macro-F1 | drop (seen - unseen) |",
            "|---|---|---|---|---|---|",
        ]
        for variant, m in models.items():
            lines.append(
                f"| {NAMES.get(variant, variant)} | {_pm(m, 'test_seen_accuracy')} | "
                f"{_pm(m, 'test_unseen_accuracy')} | "
                f"{_pm(m, 'test_seen_macro_f1')} | {_pm(m, 'test_unseen_macro_f1')} | {_pm(m, 'drop_accuracy')} |"
            )
        if "primary" in report:  # the per-seed t-tests are superseded by the primary and secondary tests above
            lines.append("")
            continue
        lines += [
            "",
            "| test (unseen modes, paired by seed) | gain | 95 % CI (t) | p (t) "
            "| 95 % CI (bootstrap over subjects) | detectable difference |",
            "|---|---|---|---|---|---|",
        ]
        for name, v in report["verdicts"].get(backend, {}).items():
            p = "n/a" if v.get("p_value") is None else f"{v['p_value']:.3g}"
            ci = "n/a" if v.get("ci95") is None else f"[{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"
            mdd = "n/a" if v.get("mdd") is None else f"{v['mdd']:.3f}"
            lines.append(
                f"| {name} | {v['gain']:+.3f} | {ci} | {p} | "
                f"[{v['boot_ci95'][0]:+.3f}, {v['boot_ci95'][1]:+.3f}] | {mdd} |"
            )
        lines += [""] + [f"- {v['sentence']}" for v in report["verdicts"].get(backend, {}).values()] + [""]
    losses = report.get("qa_label_losses")
    if losses:
        by = ", ".join(
            f"{c} {n} ({losses['lost_share_by_prompted_expression'][c]:.0%})"
            for c, n in losses["lost_by_prompted_expression"].items()
        )
        lines.append(
            f"QA labels: {losses['takes_without_accepted_label']} of {losses['takes_with_ingest_accepted']} "
            "takes have no "
            f"accepted label (by prompted expression: {by})."
        )
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/metrics.json")
    sys.stdout.write(tables(json.loads(path.read_text())) + "\n")


if __name__ == "__main__":
    main()
