"""Where a raw folder's takes came from: the capture simulator or a real rig.

The release says "simulated" only when ingest's manifest says so, and the manifest says so only
when the raw folder carries the marker file the simulator writes (`vocab.SIMULATOR_MARKER`). A
report that merely exists (`reports/capture.json`, which every `dvc repro` writes) is no evidence.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import vocab


def raw_source(raw: Path) -> str:
    """`simulator` if the simulator's marker is a regular file in `raw`, else `rig`."""
    marker = raw / vocab.SIMULATOR_MARKER
    return vocab.SOURCE_SIMULATOR if marker.is_file() and not marker.is_symlink() else vocab.SOURCE_RIG
