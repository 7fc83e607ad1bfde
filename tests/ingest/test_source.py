"""The manifest's `source` column: `simulator` only when the simulator's marker is in the raw folder."""

from __future__ import annotations

from pathlib import Path

from pipeline import vocab
from pipeline.ingest.run import ingest
from pipeline.ingest.source import raw_source


def test_the_simulator_marks_its_folder_and_ingest_records_the_source(params, raw_copy: Path) -> None:
    assert (raw_copy / vocab.SIMULATOR_MARKER).is_file()
    manifest, report = ingest(params, raw_copy)
    assert set(manifest[vocab.SOURCE_COLUMN]) == {vocab.SOURCE_SIMULATOR} and report["source"] == vocab.SOURCE_SIMULATOR
    (raw_copy / vocab.SIMULATOR_MARKER).unlink()
    manifest, _ = ingest(params, raw_copy)
    assert set(manifest[vocab.SOURCE_COLUMN]) == {vocab.SOURCE_RIG}


def test_a_linked_marker_is_not_evidence(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("x")
    (tmp_path / vocab.SIMULATOR_MARKER).symlink_to(tmp_path / "elsewhere")
    assert raw_source(tmp_path) == vocab.SOURCE_RIG
