"""Every path the pipeline reads or writes, derived from one repository root.

Why: one object built once at the entry point (`Layout.discover()`) and handed down, so a stage's
declared DVC deps/outs and the code agree, and a test runs a stage on `Layout(tmp_path)` without
patching anything. Nothing here touches the disk except `discover`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "MVFER_ROOT"

# Layout of a raw capture folder, the same for the simulator and a real rig.
TAKES_SUBDIR = "takes"
CAPTURE_LOG_NAME = "capture_log.csv"
SUBJECTS_NAME = "subjects.csv"
TRUTH_SUBDIR = "_truth"  # simulator ground truth; never read by the pipeline proper
SIMULATED_MARKER = "SIMULATED"


def ext_build_dir() -> Path:
    """Where compiled extensions are built: outside any checkout (one build per source, torch and Python)."""
    env = os.environ.get("MVFER_EXT_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mvfer" / "torch_extensions"


@dataclass(frozen=True)
class Layout:
    """The project's files under `root` (the folder holding `params.yaml`)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @classmethod
    def discover(cls, start: Path | None = None) -> Layout:
        """`$MVFER_ROOT`, else the nearest folder upwards from `start` (cwd) holding params.yaml beside the
        code (`pipeline/`), a `dvc.yaml` or a `.dvc/` folder; else the checkout this code is in."""
        env = os.environ.get(ROOT_ENV)
        if env:
            return cls(Path(env))
        here = Path(start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / "params.yaml").is_file() and any(
                (candidate / marker).exists() for marker in ("pipeline", "dvc.yaml", ".dvc")
            ):
                return cls(candidate)
        return cls(Path(__file__).resolve().parent.parent)

    def resolve(self, path: str | Path) -> Path:
        """A params path relative to the root (absolute paths pass through)."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def relative(self, path: Path) -> str:
        """`path` as DVC writes it in dvc.yaml: relative to the root when inside it."""
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    # ---- top-level folders
    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def raw(self) -> Path:
        """The capture simulator's output (the built-in "rig")."""
        return self.data / "raw"

    @property
    def interim(self) -> Path:
        return self.data / "interim"

    @property
    def aligned(self) -> Path:
        return self.data / "aligned"

    @property
    def processed(self) -> Path:
        return self.data / "processed"

    @property
    def media(self) -> Path:
        """Browser-playable proxies, <take_id>.mp4 (stage media)."""
        return self.data / "media"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def plots(self) -> Path:
        return self.reports / "plots"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def annotations(self) -> Path:
        return self.root / "annotations"

    @property
    def release(self) -> Path:
        return self.root / "release"

    @property
    def tmp(self) -> Path:
        """Stages' temporary files: same filesystem as the outputs, never inside a DVC output."""
        return self.interim / ".tmp"

    def stage_tmp(self, stage: str) -> Path:
        return self.tmp / stage

    # ---- files of the stages
    @property
    def manifest(self) -> Path:
        return self.interim / "manifest.parquet"

    @property
    def frames_qc(self) -> Path:
        return self.interim / "frames_qc.parquet"

    @property
    def align_takes(self) -> Path:
        return self.interim / "align_takes.parquet"

    @property
    def annotations_sim(self) -> Path:
        return self.interim / "annotations_sim.json"

    @property
    def annotations_sim_round2(self) -> Path:
        """The re-annotation queue, answered by the simulated annotators."""
        return self.interim / "annotations_sim_round2.json"

    @property
    def labels(self) -> Path:
        return self.processed / "labels.parquet"

    @property
    def reannotation_queue(self) -> Path:
        return self.processed / "reannotation_queue.csv"

    @property
    def splits(self) -> Path:
        return self.processed / "splits"

    @property
    def features(self) -> Path:
        return self.processed / "features"

    @property
    def models_provenance(self) -> Path:
        """What trained the models (torch, threads, MV-LSTM scan): inside `models`, as train writes no report."""
        return self.models / "provenance.json"

    @property
    def label_config(self) -> Path:
        return self.annotations / "labeling_config.xml"

    @property
    def annotation_exports(self) -> Path:
        return self.annotations / "exports"

    @property
    def annotation_snapshot(self) -> Path:
        return self.annotations / "snapshot.json"

    @property
    def empty_export(self) -> Path:
        """The shipped empty export (`[]`): "no annotations (yet)"."""
        return self.annotations / "no_reannotation.json"

    @property
    def label_studio_home(self) -> Path:
        return self.root / ".labelstudio"

    @property
    def dvc_dir(self) -> Path:
        """DVC's own folder (config, cache): a withdrawal purges the cache objects that hold a subject."""
        return self.root / ".dvc"

    @property
    def withdrawal_log(self) -> Path:
        """Git-tracked audit trail of withdrawals; names no one."""
        return self.root / "privacy" / "withdrawals.jsonl"

    # ---- reports
    def report(self, name: str) -> Path:
        """reports/<name>.json."""
        return self.reports / f"{name}.json"

    @property
    def capture_report(self) -> Path:
        return self.report("capture")

    @property
    def capture_verify_report(self) -> Path:
        return self.report("capture_verify")

    @property
    def ingest_report(self) -> Path:
        return self.report("ingest")

    @property
    def align_report(self) -> Path:
        return self.report("align")

    @property
    def align_accuracy_report(self) -> Path:
        return self.report("align_accuracy")

    @property
    def media_report(self) -> Path:
        return self.report("media")

    @property
    def qa_report(self) -> Path:
        return self.report("qa")

    @property
    def qa_markdown(self) -> Path:
        return self.reports / "qa.md"

    @property
    def splits_report(self) -> Path:
        return self.report("splits")

    @property
    def features_report(self) -> Path:
        return self.report("features")

    @property
    def metrics(self) -> Path:
        return self.report("metrics")

    @property
    def predictions(self) -> Path:
        """Per take, for `annotate push --guesses`."""
        return self.reports / "predictions.csv"

    @property
    def qa_plot(self) -> Path:
        """Per annotator: gold accuracy, agreement with the consensus, spammer score (stage qa)."""
        return self.plots / "qa_annotators.png"

    @property
    def learning_curves(self) -> Path:
        """Per epoch of every fit (stage train; a DVC plot)."""
        return self.plots / "learning_curves.csv"

    @property
    def learning_curves_plot(self) -> Path:
        return self.plots / "learning_curves.png"

    @property
    def confusion(self) -> Path:
        """Per test take: actual and predicted class (stage evaluate; a DVC confusion plot)."""
        return self.plots / "confusion.csv"

    @property
    def confusion_plot(self) -> Path:
        return self.plots / "confusion.png"

    @property
    def effects(self) -> Path:
        """Primary and secondary paired effects with their intervals (stage evaluate; a DVC plot)."""
        return self.plots / "effects.csv"

    @property
    def effects_plot(self) -> Path:
        """The same as a forest plot."""
        return self.plots / "effects.png"

    @property
    def mode_accuracy_plot(self) -> Path:
        """Accuracy per pose x illumination, per variant and test set (stage evaluate)."""
        return self.plots / "mode_accuracy.png"

    @property
    def probes(self) -> Path:
        """Linear probe accuracy per representation and mode factor (stage evaluate; a DVC plot)."""
        return self.plots / "probes.csv"

    @property
    def probes_plot(self) -> Path:
        return self.plots / "probes.png"

    @property
    def release_report(self) -> Path:
        return self.report("release")

    # ---- a raw capture folder (the simulator's or a rig's)
    @staticmethod
    def takes_dir(raw: Path) -> Path:
        return raw / TAKES_SUBDIR

    @staticmethod
    def capture_log(raw: Path) -> Path:
        return raw / CAPTURE_LOG_NAME

    @staticmethod
    def subjects(raw: Path) -> Path:
        return raw / SUBJECTS_NAME

    @staticmethod
    def truth(raw: Path) -> Path:
        return raw / TRUTH_SUBDIR
