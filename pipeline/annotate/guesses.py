"""The model's per-take guesses for `mvfer annotate push --guesses FILE`.

Format (written by the evaluate stage as reports/predictions.csv): CSV with a header
`take_id,label,confidence,model_version`, one row per take; `confidence` is the model's probability
of `label` in [0, 1]. Extra columns are ignored. A row with an unknown take or label, a confidence
outside [0, 1] or a repeated take is skipped and counted by reason, never fatal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError

COLUMNS = ("take_id", "label", "confidence", "model_version")


class GuessesError(PipelineError, ValueError):
    """The guesses file cannot be used at all (missing, not CSV, no required column)."""


@dataclass
class Guesses:
    table: pd.DataFrame  # indexed by take_id: label, confidence, model_version
    skipped: Counter = field(default_factory=Counter)

    def get(self, take_id: str) -> tuple[str, float, str] | None:
        if take_id not in self.table.index:
            return None
        row = self.table.loc[take_id]
        return str(row["label"]), float(row["confidence"]), str(row["model_version"])  # type: ignore[arg-type]

    @property
    def model_versions(self) -> list[str]:
        return sorted(self.table["model_version"].unique())


def load_guesses(path: Path, known_takes: set[str], labels: set[str]) -> Guesses:
    try:
        df = pd.read_csv(path, dtype={"take_id": str, "label": str, "model_version": str})
    except FileNotFoundError:
        raise GuessesError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise GuessesError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise GuessesError(f"{path}: missing column(s) {', '.join(missing)}; expected header {','.join(COLUMNS)}")
    df = df[list(COLUMNS)].copy()
    df["confidence"] = pd.to_numeric(df["confidence"], errors="coerce")
    skipped: Counter = Counter()
    checks = [
        ("unknown_take", ~df["take_id"].isin(known_takes)),
        ("label_not_in_config", ~df["label"].isin(labels)),
        ("confidence_not_in_0_1", ~df["confidence"].between(0, 1)),
        ("no_model_version", df["model_version"].fillna("").str.strip() == ""),
    ]
    bad = pd.Series(False, index=df.index)
    for reason, mask in checks:
        mask = mask & ~bad
        skipped[reason] += int(mask.sum())
        bad |= mask
    df = df[~bad]
    dup = df["take_id"].duplicated(keep="first")
    skipped["repeated_take"] += int(dup.sum())
    df = df[~dup]
    return Guesses(df.set_index("take_id"), +skipped)
