"""A public release of imported data is refused unless params state the right to redistribute."""

from __future__ import annotations

import pandas as pd

from pipeline.release.build import licence_refusal


def _manifest(datasets: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "take_id": [f"t{i}" for i in range(len(datasets))],
            "status": "accepted",
            "dataset": pd.array(datasets, dtype="string"),
        }
    )


def test_imported_takes_are_refused_without_the_right_to_redistribute() -> None:
    why = licence_refusal(_manifest(["oulu-casia", "oulu-casia", None]), redistribution=False)
    assert why is not None and "2 accepted takes come from an imported dataset (oulu-casia)" in why
    assert "import.licence.redistribution" in why


def test_stated_right_rig_data_and_quarantined_imports_are_not_refused() -> None:
    assert licence_refusal(_manifest(["dfew"]), redistribution=True) is None
    assert licence_refusal(_manifest([None, ""]), redistribution=False) is None
    assert licence_refusal(pd.DataFrame({"take_id": ["a"], "status": ["accepted"]}), redistribution=False) is None
    q = _manifest(["dfew"]).assign(status="quarantined")
    assert licence_refusal(q, redistribution=False) is None
