"""A re-import keeps the consent table the lab filled in (consent, withdrawals) and only adds new subjects."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline.importers import run_import
from pipeline.importers.common import DatasetImportError, merge_subjects
from pipeline.params import Params
from tests.importers import trees
from tests.importers.conftest import import_params
from tests.importers.trees import SimTake


def _rows(p: Path) -> list[dict]:
    return list(csv.DictReader(open(p, encoding="utf-8")))


def test_a_reimport_keeps_filled_consent_and_a_withdrawal_and_adds_new_subjects_blank(
    tmp_path: Path, sim_takes: list[SimTake], params: Params
) -> None:
    p = import_params(params)
    src, out = tmp_path / "oulu", tmp_path / "raw"
    trees.oulu_casia(src, sim_takes, defects=False)
    run_import("oulu-casia", src, out, p.import_, p.rig.expressions)
    ledger = out / "subjects.csv"
    first, second = [r["subject_id"] for r in _rows(ledger)]
    # the lab fills the table: the first subject consented then withdrew; the second is not in it yet
    ledger.write_text(
        "subject_id,consent_research,consent_public_release,withdrawn,consent_basis,withdrawn_date\n"
        f"{first},true,false,true,form 12,2026-11-20\n"
    )
    report = run_import("oulu-casia", src, out, p.import_, p.rig.expressions)
    rows = _rows(ledger)
    assert rows[0] == {
        "subject_id": first,
        "consent_research": "true",
        "consent_public_release": "false",
        "withdrawn": "true",
        "consent_basis": "form 12",
        "withdrawn_date": "2026-11-20",
    }
    assert rows[1]["subject_id"] == second and all(rows[1][k] == "" for k in rows[1] if k != "subject_id")
    assert len(rows) == 2 and report["consent_table"] == {"rows_kept": 1, "subjects_added": 1}
    before = ledger.read_bytes()
    report = run_import("oulu-casia", src, out, p.import_, p.rig.expressions)
    assert ledger.read_bytes() == before and report["consent_table"] == {"rows_kept": 2, "subjects_added": 0}


def test_a_consent_table_without_subject_ids_is_refused_not_overwritten(tmp_path: Path) -> None:
    with pytest.raises(DatasetImportError, match=r"subjects\.csv: no subject_id column"):
        merge_subjects("id,withdrawn\nS1,true\n", [{"subject_id": "S1"}], tmp_path / "subjects.csv")
    text, kept, added = merge_subjects(None, [{"subject_id": "S1", "withdrawn": ""}], tmp_path / "subjects.csv")
    assert text.splitlines()[1] == "S1,,,," and (kept, added) == (0, 1)
