"""Logging setup shared by the CLI and the stages."""

from __future__ import annotations

import logging
import os


def setup_logging(verbose: bool = False) -> None:
    """One format for every stage; MVFER_LOG_LEVEL overrides the level."""
    level = os.environ.get("MVFER_LOG_LEVEL", "DEBUG" if verbose else "INFO").upper()
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
