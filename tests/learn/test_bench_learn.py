"""scripts/bench_learn.py runs on a tiny synthetic input and reports every row beside its floor (issue 20)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_learn.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_learn", SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_prints_each_stage_row_beside_its_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "learn.json"
    argv = ["bench_learn.py", "--scale", "0.05", "--epochs", "1", "--train-epochs", "1", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    _load().main()
    printed = capsys.readouterr().out
    assert (
        "floor: training = " in printed and "floor: bare model = " in printed and "reference: torch.nn.LSTM" in printed
    )
    figures = json.loads(out.read_text())
    assert {"date", "machine", "load_1min", "commit"} <= set(figures)
    assert [r["row"].split(" ")[0] for r in figures["features"]["rows"]] == ["fit", "encode", "extractor"]
    assert [r["row"].split(" ")[0] for r in figures["train"]["rows"]] == ["lstm", "mv_lstm"]
    for row in figures["features"]["rows"] + figures["train"]["rows"]:
        assert row["items"] > 0 and row["stage_per_s"] > 0 and row["floor_per_s"] > 0 and row["x_floor"] > 0
        assert f"{row['stage_per_s']:.1f}" in printed and f"{row['x_floor']:.2f}" in printed
