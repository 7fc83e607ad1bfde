"""The one fail-closed consent parser (pipeline/consent.py) and its users agree."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline import consent, vocab
from pipeline.ingest.schema import CaptureLogError, read_consent
from pipeline.release import build

HEADER = "subject_id,consent_research,consent_public_release,withdrawn\n"


def _ledger(tmp_path: Path, body: str) -> consent.Ledger:
    p = tmp_path / "subjects.csv"
    p.write_text(HEADER + body)
    return consent.read_ledger(p)


@pytest.mark.parametrize("value", ["withdrawn", "2026-11-01", "x", "", " ", "maybe", "TRUE?"])
def test_an_unreadable_withdrawn_value_excludes_the_subject_everywhere(tmp_path: Path, value: str) -> None:
    led = _ledger(tmp_path, f"sub-a,true,true,{value}\nsub-b,true,true,false\n")
    assert led.research_exclusion("sub-a").code == consent.CONSENT_INVALID
    assert led.release_exclusion("sub-a").code == consent.CONSENT_INVALID
    assert "field 'withdrawn'" in led.invalid["sub-a"]
    assert led.release_exclusion("sub-b") is None
    assert "sub-a" in led.withdrawn()


def test_unknown_subject_and_missing_flags_fail_closed(tmp_path: Path) -> None:
    led = _ledger(tmp_path, "sub-a,yes,no,no\nsub-b,0,1,0\n")
    assert led.research_exclusion("sub-zz").code == consent.UNKNOWN_SUBJECT
    assert led.research_exclusion("sub-a") is None
    assert led.release_exclusion("sub-a").code == consent.NO_PUBLIC_RELEASE_CONSENT
    assert led.research_exclusion("sub-b").code == consent.NO_RESEARCH_CONSENT


def test_a_missing_column_or_blank_subject_is_structural(tmp_path: Path) -> None:
    p = tmp_path / "subjects.csv"
    p.write_text("subject_id,consent_research,consent_public_release\nsub-a,true,true\n")
    with pytest.raises(CaptureLogError, match="field 'withdrawn'"):
        consent.read_ledger(p)
    p.write_text(HEADER + ",true,true,false\n")
    with pytest.raises(CaptureLogError, match="line 2, field 'subject_id'"):
        consent.read_ledger(p)


def test_ingest_and_release_use_the_same_rule(tmp_path: Path) -> None:
    """The old release parser treated `withdrawn` values it did not know as 'not withdrawn'."""
    p = tmp_path / "subjects.csv"
    p.write_text(HEADER + "sub-a,true,true,withdrawn\nsub-b,true,true,2026-11-01\nsub-c,true,true,false\n")
    good, bad = read_consent(p)
    assert set(good) == {"sub-c"} and set(bad) == {"sub-a", "sub-b"}
    m = pd.DataFrame(
        {"take_id": ["a0", "b0", "c0"], "subject_id": ["sub-a", "sub-b", "sub-c"], "status": vocab.ACCEPTED}
    )
    sel = build.select_takes(m, consent.read_ledger(p), pd.DataFrame({"take_id": ["a0", "b0", "c0"]}))
    assert list(sel.takes["take_id"]) == ["c0"]
    assert sel.excluded == {"not_accepted_by_ingest": 0, consent.CONSENT_INVALID: 2}


def test_the_ledger_does_not_import_ingest() -> None:
    """consent <-> ingest.schema was an import cycle: both now read CSV through pipeline.csvfile."""
    import subprocess
    import sys

    code = "import sys, pipeline.consent; print(sorted(m for m in sys.modules if m.startswith('pipeline.ingest')))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
