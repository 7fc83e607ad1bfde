"""Run alone, outside tests/annotate, a test still gets Label Studio's home in a temp folder: the
fixture lives in tests/labelstudio_fixtures.py (loaded for the whole suite), not in a subfolder's conftest."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_label_studio_home_is_outside_the_checkout(ls_home: Path) -> None:
    assert not Path(ls_home).resolve().is_relative_to(REPO)
