"""Run alone, outside tests/annotate, a test still gets Label Studio's home in a temp folder: the
fixture lives in tests/labelstudio_fixtures.py (loaded for the whole suite), not in a subfolder's conftest."""

from __future__ import annotations

from pipeline import paths


def test_label_studio_home_is_outside_the_checkout() -> None:
    assert not paths.LABEL_STUDIO_HOME.resolve().is_relative_to(paths.ROOT.resolve())
