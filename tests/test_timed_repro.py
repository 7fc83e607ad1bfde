"""`make run`'s own stage log (scripts/timed_repro.py): the docs' stage table is only as true as its parsing."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "timed_repro.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("timed_repro", SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_stage_lasts_until_the_next_line_of_dvc_and_a_skipped_stage_counts_nothing() -> None:
    tr = _load()
    events = [(0.5, "skipped", "capture"), (1.0, "ran", "ingest"), (31.0, "ran", "align"), (90.0, "skipped", "media")]
    rows = tr.stage_times(events, end=95.0)
    assert rows == [
        {"stage": "capture", "status": "skipped", "wall_s": 0.0},
        {"stage": "ingest", "status": "ran", "wall_s": 30.0},
        {"stage": "align", "status": "ran", "wall_s": 59.0},
        {"stage": "media", "status": "skipped", "wall_s": 0.0},
    ]


def test_the_patterns_match_what_dvc_prints_and_nothing_else() -> None:
    tr = _load()
    assert tr.RUNNING.match("Running stage 'align':")["name"] == "align"
    assert tr.SKIPPED.match("Stage 'capture' didn't change, skipping")["name"] == "capture"
    assert tr.RUNNING.match("> python -m pipeline.align.stage") is None
    assert tr.SKIPPED.match("Updating lock file 'dvc.lock'") is None
