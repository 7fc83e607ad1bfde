"""An in-the-wild import (MAFW layout) ingests, aligns and splits by its official folds, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.align import stage as align_stage
from pipeline.importers import run_import
from pipeline.ingest.stage import run as ingest_stage
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.split import stage as split_stage
from pipeline.stage import invoke
from tests.importers import trees
from tests.importers.conftest import import_params
from tests.importers.trees import SimTake

pytestmark = pytest.mark.integration


def test_mafw_import_ingests_aligns_and_splits_by_the_official_folds(
    tmp_path: Path, layout: Layout, sim_takes: list[SimTake], params: Params
) -> None:
    """The stage shells in process, on a temp project (`layout`), the import's raw folder beside it."""
    # alternate the two expressions so that every official test set (clip n -> set 1 + n % 5) holds both
    by_expr = {e: [t for t in sim_takes if t.expression == e] for e in sorted({t.expression for t in sim_takes})}
    mixed = [t for pair in zip(*by_expr.values()) for t in pair]
    src, raw = tmp_path / "MAFW", tmp_path / "raw"
    expected = trees.mafw(src, mixed)
    p = import_params(params, licence=True)
    run_import("mafw", src, raw, p.import_, p.rig.expressions)
    p = p.model_copy(
        update={
            "ingest": p.ingest.model_copy(update={"raw_dir": str(raw)}),
            "align": p.align.model_copy(update={"workers": 1}),
            "split": p.split.model_copy(
                update={
                    "labels": "dataset",
                    "min_class_takes": 1,
                    "subject_kfold_k": 2,
                    "seen_modes": [],
                    "val_subjects": 3,
                    "leave_one_mode_out": False,
                    "official_folds": True,
                    "official_val_fraction": 0.2,
                }
            ),
        }
    )
    assert invoke(ingest_stage, layout, p) == 0
    assert json.loads(layout.ingest_report.read_text())["accepted"] == 16
    assert invoke(align_stage.run, layout, p) == 0
    assert json.loads(layout.align_report.read_text())["takes"] == 16
    assert invoke(split_stage.run, layout, p) == 0
    assert set(json.loads(layout.splits_report.read_text())["protocols"]) == {"subject_kfold", "official"}
    ok = set(align_stage_ok(layout.align_takes))
    official = json.loads((layout.splits / "official.json").read_text())
    for fold in official["folds"]:
        k = fold["official_test_set"]
        assert fold["test"] == sorted(t for t, (_, f) in expected.items() if f == k and t in ok)
        assert sorted(fold["train"] + fold["val"]) == sorted(t for t, (_, f) in expected.items() if f != k and t in ok)


def align_stage_ok(path: Path) -> list[str]:
    import pandas as pd

    takes = pd.read_parquet(path)
    return list(takes.loc[takes["status"] == "ok", "take_id"])
