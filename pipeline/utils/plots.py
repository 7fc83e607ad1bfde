"""Headless matplotlib figures, saved atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.utils.io import atomic_path  # noqa: E402


def save(fig: plt.Figure, out: Path, dpi: int = 110) -> None:
    """Write a PNG atomically and free the figure."""
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
