"""Simulated annotations never become the labels of real takes.

Why: the simulated annotators take their "truth" from a take's dataset label or prompt; on a rig's
or an imported raw folder their export would pass QA, be split, trained on and released as if
people had labelled the takes. annotate_sim and qa refuse while a `qa.*snapshot` key still points
at a simulator export and the manifest's `source` is not the simulator.
"""

from __future__ import annotations

import pandas as pd

from pipeline import vocab
from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.params import QAParams


class SimulatedLabelsError(PipelineError, ValueError):
    """A simulator export is configured as the annotation snapshot of real (non-simulator) takes."""


def sim_snapshot_keys(qa: QAParams, layout: Layout) -> list[str]:
    """The params keys (qa.snapshot, qa.reannotation_snapshot) that point at a simulator export."""
    sim = {"snapshot": layout.annotations_sim, "reannotation_snapshot": layout.annotations_sim_round2}
    return [f"qa.{key}" for key, path in sim.items() if getattr(qa, key) and layout.resolve(getattr(qa, key)) == path]


def manifest_source(manifest: pd.DataFrame) -> str:
    """The one source of the manifest's takes; a manifest without the column predates it."""
    if vocab.SOURCE_COLUMN not in manifest.columns:
        raise SimulatedLabelsError(f"manifest.parquet: no column '{vocab.SOURCE_COLUMN}' (re-run ingest)")
    sources = set(manifest[vocab.SOURCE_COLUMN].astype(str))
    return (
        vocab.SOURCE_SIMULATOR if sources == {vocab.SOURCE_SIMULATOR} else ",".join(sorted(sources)) or vocab.SOURCE_RIG
    )


def refuse_simulated_labels_on_real_data(manifest: pd.DataFrame, qa: QAParams, layout: Layout) -> None:
    """Raise when simulated annotations would label takes the simulator did not render."""
    keys = sim_snapshot_keys(qa, layout)
    if not keys:
        return
    source = manifest_source(manifest)
    if source != vocab.SOURCE_SIMULATOR:
        raise SimulatedLabelsError(
            f"the manifest's takes come from '{source}', not the simulator, but {' and '.join(keys)} point at "
            "simulated annotations: set qa.snapshot to annotations/snapshot.json (after `mvfer annotate pull`; "
            "annotations/no_reannotation.json while no one has annotated, e.g. an import labelled by "
            "split.labels: dataset) and qa.reannotation_snapshot to annotations/no_reannotation.json "
            "(or the queue project's export) in params.yaml"
        )
