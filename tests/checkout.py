"""A fresh copy of this checkout for the integration tests that run `dvc repro` in a temporary project
(the helper lives in `pipeline.utils.checkout`, shared with scripts/bench_recordings.py)."""

from __future__ import annotations

from pipeline.utils.checkout import STALE, copy_checkout

__all__ = ["STALE", "copy_checkout"]
