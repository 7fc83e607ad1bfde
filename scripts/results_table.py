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
    return f"{m[key + '_mean']:.3f} +- {m[key + '_std']:.3f}" if key + "_mean" in m else "n/a"


def tables(report: dict) -> str:
    lines = []
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
        lines += [
            "",
            "| test (unseen modes, paired by seed) | gain | 95 % CI (t) | p (t) "
            "| 95 % CI (bootstrap over subjects) | detectable difference |",
            "|---|---|---|---|---|---|",
        ]
        for name, v in report["verdicts"].get(backend, {}).items():
            p = "n/a" if v.get("p_value") is None else f"{v['p_value']:.3g}"
            lines.append(
                f"| {name} | {v['gain']:+.3f} | [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] | {p} | "
                f"[{v['boot_ci95'][0]:+.3f}, {v['boot_ci95'][1]:+.3f}] | {v['mdd']:.3f} |"
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
