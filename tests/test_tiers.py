"""The test tiers (tests/tiers.py): a module the tables name must exist, and the tier rule holds."""

from __future__ import annotations

from tests.tiers import TESTS, listed_modules, tier_of


def test_every_module_the_tier_tables_name_exists() -> None:
    missing = sorted(m for m in listed_modules() if not (TESTS / m).is_file())
    assert not missing, f"tests/tiers.py names modules that do not exist (renamed?): {missing}"


def test_a_test_takes_the_highest_of_its_marker_and_its_module() -> None:
    assert tier_of("qa/test_agreement.py", set()) == "unit"
    assert tier_of("qa/test_agreement.py", {"integration"}) == "integration"
    assert tier_of("media/test_stage.py", set()) == "integration"
    assert tier_of("media/test_stage.py", {"e2e"}) == "e2e"
    assert tier_of("test_dvc_pipeline.py", {"integration"}) == "e2e"
