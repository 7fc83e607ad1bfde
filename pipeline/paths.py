"""Every path the pipeline reads or writes, resolved from the repository root.

One place, so that a stage's declared DVC deps/outs and the code agree. The root is the
directory holding `params.yaml`; `MVFER_ROOT` overrides it (tests run stages in temp clones).
"""

from __future__ import annotations

import os
from pathlib import Path


def _find_root() -> Path:
    env = os.environ.get("MVFER_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params.yaml").is_file() and (candidate / "pipeline").is_dir():
            return candidate
    return Path(__file__).resolve().parent.parent


ROOT: Path = _find_root()
PARAMS_FILE: Path = ROOT / "params.yaml"

DATA: Path = ROOT / "data"
RAW: Path = DATA / "raw"                   # the capture simulator's output (the "rig")
INTERIM: Path = DATA / "interim"
ALIGNED: Path = DATA / "aligned"
PROCESSED: Path = DATA / "processed"
REPORTS: Path = ROOT / "reports"
MODELS: Path = ROOT / "models"
ANNOTATIONS: Path = ROOT / "annotations"

MANIFEST: Path = INTERIM / "manifest.parquet"
INGEST_REPORT: Path = REPORTS / "ingest.json"
CAPTURE_REPORT: Path = REPORTS / "capture.json"
CAPTURE_VERIFY_REPORT: Path = REPORTS / "capture_verify.json"
FRAMES_QC: Path = INTERIM / "frames_qc.parquet"
ALIGN_TAKES: Path = INTERIM / "align_takes.parquet"
ALIGN_REPORT: Path = REPORTS / "align.json"
ALIGN_ACCURACY_REPORT: Path = REPORTS / "align_accuracy.json"
ALIGN_TMP: Path = INTERIM / ".tmp" / "align"  # the align stage's temporary files, never inside ALIGNED
MEDIA: Path = DATA / "media"                 # browser-playable proxies, <take_id>.mp4 (stage media)
MEDIA_TMP: Path = INTERIM / ".tmp" / "media"  # the media stage's temporary files, never inside MEDIA
MEDIA_REPORT: Path = REPORTS / "media.json"
LABELS: Path = PROCESSED / "labels.parquet"          # written by the QA stage
REANNOTATION_QUEUE: Path = PROCESSED / "reannotation_queue.csv"
QA_REPORT: Path = REPORTS / "qa.json"
QA_MARKDOWN: Path = REPORTS / "qa.md"
LABEL_CONFIG: Path = ANNOTATIONS / "labeling_config.xml"
ANNOTATION_EXPORTS: Path = ANNOTATIONS / "exports"
ANNOTATION_SNAPSHOT: Path = ANNOTATIONS / "snapshot.json"
ANNOTATIONS_SIM: Path = INTERIM / "annotations_sim.json"
# The shipped empty export (`[]`): "no annotations (yet)" for qa.snapshot (labels from the dataset) or qa.reannotation_snapshot.
EMPTY_EXPORT: Path = ROOT / "annotations" / "no_reannotation.json"
ANNOTATIONS_SIM_ROUND2: Path = INTERIM / "annotations_sim_round2.json"  # the re-annotation queue, answered
LABEL_STUDIO_HOME: Path = ROOT / ".labelstudio"
RELEASE: Path = ROOT / "release"
RELEASE_REPORT: Path = REPORTS / "release.json"
RELEASE_TMP: Path = INTERIM / ".tmp" / "release"  # the release build, renamed into RELEASE when complete
WITHDRAWAL_LOG: Path = ROOT / "privacy" / "withdrawals.jsonl"  # git-tracked audit trail; names no one
SPLITS: Path = PROCESSED / "splits"
SPLITS_REPORT: Path = REPORTS / "splits.json"
FEATURES: Path = PROCESSED / "features"
FEATURES_REPORT: Path = REPORTS / "features.json"
METRICS: Path = REPORTS / "metrics.json"
PREDICTIONS: Path = REPORTS / "predictions.csv"  # per take, for `annotate push --guesses`
PLOTS: Path = REPORTS / "plots"

# Layout of a raw capture folder, the same for the simulator and a real rig.
TAKES_SUBDIR = "takes"
CAPTURE_LOG_NAME = "capture_log.csv"
SUBJECTS_NAME = "subjects.csv"
TRUTH_SUBDIR = "_truth"  # simulator ground truth; never read by the pipeline proper


def resolve(path: str | Path) -> Path:
    """A params path relative to the repository root (absolute paths pass through)."""
    p = Path(path)
    return p if p.is_absolute() else ROOT / p

# Compiled extensions (pipeline/models/csrc), built once per source, torch and Python version and shared by
# every checkout: outside the repository, so no stage reads an undeclared file and a fresh clone rebuilds nothing.
EXT_BUILD: Path = Path(os.environ.get("MVFER_EXT_DIR")
                       or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mvfer" / "torch_extensions")
