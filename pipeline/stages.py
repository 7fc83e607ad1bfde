"""The stage list, written once.

From it come `dvc.yaml` (`mvfer dvc-yaml --write`, drift checked by `--check`; each stage's code deps
are its module's import closure, produced by `pipeline.deps`), the CLI's stage subcommands, the
outputs that release and withdrawal treat as the pipeline's, and the docs' stage table.

This module is data: it imports no stage, so the CLI can list stages without loading them, and no
stage's code deps include it unless that stage asks what the outputs are (release, withdrawal).
Paths are relative to the repository root; `${...}` are params.yaml keys, resolved by DVC.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Out:
    """One output: `kind` out, metric or plot; `persist` keeps it across reruns (incremental stages)."""

    path: str
    kind: str = "out"  # out | metric | plot
    cache: bool = True
    persist: bool = False
    plot: dict[str, str] = field(default_factory=dict)  # DVC plot properties (x, y, template)


@dataclass(frozen=True)
class Option:
    """A command-line option of the stage's CLI subcommand, passed to the shell as a keyword argument."""

    flag: str
    help: str
    dest: str = ""

    @property
    def name(self) -> str:
        return self.dest or self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Stage:
    """One DVC stage: its shell module (`python -m module` runs `module.run`), what it reads and writes."""

    name: str
    module: str
    desc: str
    cli: tuple[str, ...]
    params: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()  # data deps; the code deps are produced from `module`
    outs: tuple[Out, ...] = ()
    options: tuple[Option, ...] = ()
    help: str = ""
    branch: str = "core"  # core | simulator: the simulator's stages are an optional branch

    @property
    def cmd(self) -> str:
        return f"python -m {self.module}"

    def outputs(self, kind: str | None = None) -> list[str]:
        return [o.path for o in self.outs if kind is None or o.kind == kind]


STAGES: tuple[Stage, ...] = (
    Stage(
        "capture",
        "pipeline.capture.stage",
        "Render the built-in simulated capture (videos, capture log, consent table, ground truth)",
        cli=("capture", "simulate"),
        branch="simulator",
        help="render the simulated capture into data/raw (params: capture)",
        params=("capture", "executor"),
        outs=(Out("data/raw"), Out("reports/capture.json", "metric", cache=False)),
        options=(
            Option("--out", "write the raw folder here instead of data/raw"),
            Option("--report", "write the render figures here instead of reports/capture.json"),
        ),
    ),
    Stage(
        "capture_verify",
        "pipeline.capture.verify_stage",
        "Check that a real face detector finds the simulated faces, per pose and illumination, from align's detections",
        cli=("capture", "verify"),
        branch="simulator",
        help="detection rate of align's detector on the simulated faces, per pose and illumination",
        params=("capture_verify.every_nth_frame", "align.detector", "align.min_face_px", "align.keyframe_every"),
        deps=("data/aligned", "data/raw/capture_log.csv", "data/raw/_truth"),
        outs=(Out("reports/capture_verify.json", "metric", cache=False),),
        options=(Option("--raw", "simulated raw folder with capture_log.csv and _truth (default data/raw)"),),
    ),
    Stage(
        "ingest",
        "pipeline.ingest.stage",
        "Validate, probe by decoding, checksum and list every raw take; quarantine bad ones with a reason",
        cli=("ingest",),
        help="validate, probe and checksum raw recordings into the manifest (params: ingest)",
        params=("rig", "ingest"),
        deps=("${ingest.raw_dir}",),
        outs=(Out("data/interim/manifest.parquet"), Out("reports/ingest.json", "metric", cache=False)),
        options=(Option("--raw", "raw capture folder (default: ingest.raw_dir in params.yaml)"),),
    ),
    Stage(
        "align",
        "pipeline.align.stage",
        "Detect, track and align faces (ArcFace 5-point template); per-frame quality; incremental",
        cli=("align", "run"),
        help="align every accepted take, incrementally (params: align)",
        params=("align", "ingest.raw_dir", "executor"),
        deps=("data/interim/manifest.parquet", "${ingest.raw_dir}"),
        outs=(
            Out("data/aligned", persist=True),
            Out("data/interim/frames_qc.parquet"),
            Out("data/interim/align_takes.parquet"),
            Out("reports/align.json", "metric", cache=False),
        ),
    ),
    Stage(
        "media",
        "pipeline.media.stage",
        "Browser-playable H.264 proxies (data/media/<take_id>.mp4) of every accepted take; incremental",
        cli=("media",),
        help="browser-playable H.264 proxies of accepted takes into data/media, incrementally (params: media)",
        params=("media", "ingest.raw_dir", "executor"),
        deps=("data/interim/manifest.parquet", "${ingest.raw_dir}"),
        outs=(Out("data/media", persist=True), Out("reports/media.json", "metric", cache=False)),
    ),
    Stage(
        "align_accuracy",
        "pipeline.align.accuracy_stage",
        "Detected 5 points against the simulator's ground truth, per pose and illumination",
        cli=("align", "accuracy"),
        branch="simulator",
        help="5-point NME and detection rate against the simulator's truth",
        deps=("data/aligned", "data/interim/manifest.parquet", "data/raw/_truth"),
        outs=(Out("reports/align_accuracy.json", "metric", cache=False),),
        options=(Option("--truth", "ground-truth folder (default data/raw/_truth)"),),
    ),
    Stage(
        "annotate_sim",
        "pipeline.annotate.simulate",
        "Simulated annotators of known reliability write a Label Studio full-JSON export (built-in data only)",
        cli=("annotate", "simulate"),
        branch="simulator",
        help="write a Label Studio export from simulated annotators (built-in data)",
        params=("annotate_sim", "qa.snapshot", "qa.reannotation_snapshot", "qa.truth", "qa.thresholds"),
        deps=("annotations/labeling_config.xml", "data/interim/manifest.parquet", "data/raw/_truth"),
        outs=(Out("data/interim/annotations_sim.json"), Out("data/interim/annotations_sim_round2.json")),
    ),
    Stage(
        "qa",
        "pipeline.qa.stage",
        "Agreement, Dawid-Skene labels, annotator quality, checks and the re-annotation queue",
        cli=("qa",),
        help="agreement, aggregation, annotator quality, re-annotation queue (params: qa)",
        params=("qa",),
        deps=(
            "annotations/labeling_config.xml",
            "data/interim/manifest.parquet",
            "${qa.snapshot}",
            "${qa.reannotation_snapshot}",
            "${qa.truth}",
        ),
        outs=(
            Out("data/processed/labels.parquet"),
            Out("data/processed/reannotation_queue.csv"),
            Out("reports/qa.md", cache=False),
            Out("reports/qa.json", "metric", cache=False),
            Out("reports/plots/qa_annotators.png", "plot"),
        ),
        options=(Option("--snapshot", "export to read instead of qa.snapshot"),),
    ),
    Stage(
        "split",
        "pipeline.split.stage",
        "Subject-independent, unseen-mode and leave-one-pose/illumination-out protocols; fails on any leak",
        cli=("split",),
        help="subject-independent, unseen-mode and leave-one-factor-out protocols, leakage checks (params: split)",
        params=("split",),
        deps=(
            "data/interim/manifest.parquet",
            "data/interim/align_takes.parquet",
            "data/processed/labels.parquet",
            "data/aligned",
        ),
        outs=(Out("data/processed/splits"), Out("reports/splits.json", "metric", cache=False)),
    ),
    Stage(
        "features",
        "pipeline.learn.features",
        "Per-frame CNN features, trained per fold on that fold's training subjects only",
        cli=("features",),
        help="train the per-frame CNN on training subjects and encode every frame (params: features)",
        params=("features",),
        deps=("data/processed/splits", "data/aligned"),
        outs=(Out("data/processed/features"), Out("reports/features.json", "metric", cache=False)),
    ),
    Stage(
        "train",
        "pipeline.learn.train",
        "LSTM vs MV-LSTM variants, every seed and fold, early-stopped on validation",
        cli=("train",),
        help="train every model variant x seed x fold (params: train)",
        params=("features.protocol", "features.backends", "features.seeds", "train"),
        deps=("data/processed/splits", "data/processed/features"),
        outs=(Out("models"), Out("reports/plots/learning_curves.csv", "plot", plot={"x": "epoch", "y": "val_acc"})),
    ),
    Stage(
        "evaluate",
        "pipeline.learn.evaluate",
        "The pre-registered primary test, Holm-corrected secondary tests, accuracy per mode and skin tone, probes",
        cli=("evaluate",),
        help="primary test, secondary tests, accuracy per mode and skin tone, probes, plots (params train, experiment)",
        params=(
            "features.protocol",
            "features.backends",
            "features.seeds",
            "train",
            "experiment",
            "qa.truth",
            "split.mode_parts",
        ),
        deps=(
            "reports/plots/learning_curves.csv",
            "models",
            "data/processed/splits",
            "data/processed/features",
            "data/processed/labels.parquet",
            "data/interim/manifest.parquet",
            "${qa.truth}",
        ),
        outs=(
            Out("reports/predictions.csv", cache=False),
            Out("reports/metrics.json", "metric", cache=False),
            Out("reports/plots/confusion.csv", "plot", plot={"template": "confusion", "x": "predicted", "y": "actual"}),
            Out("reports/plots/confusion.png", "plot"),
            Out("reports/plots/learning_curves.png", "plot"),
            Out(
                "reports/plots/effects.csv",
                "plot",
                cache=False,
                plot={"template": "simple", "x": "estimate", "y": "comparison"},
            ),
            Out("reports/plots/effects.png", "plot"),
            Out("reports/plots/mode_accuracy.png", "plot"),
            Out(
                "reports/plots/probes.csv",
                "plot",
                cache=False,
                plot={"template": "bar_horizontal", "x": "accuracy_mean", "y": "probe"},
            ),
            Out("reports/plots/probes.png", "plot"),
        ),
    ),
    Stage(
        "release",
        "pipeline.release.stage",
        "Versioned, consent-aware dataset release with datasheet, Croissant metadata and checksums",
        cli=("release", "build"),
        help="build release/<name>-<version>/ and its archive (params: release)",
        params=("release", "ingest.raw_dir", "import.licence.redistribution", "source.kind"),
        deps=(
            "data/interim/manifest.parquet",
            "data/interim/align_takes.parquet",
            "data/aligned",
            "data/processed/labels.parquet",
            "data/processed/splits",
            "${ingest.raw_dir}/subjects.csv",
            "reports/ingest.json",
            "reports/align.json",
            "reports/align_accuracy.json",
            "reports/qa.json",
            "reports/metrics.json",
        ),
        outs=(Out("release", persist=True), Out("reports/release.json", "metric", cache=False)),
        options=(
            Option("--version", "X.Y.Z (default: release.version in params.yaml)"),
            Option("--previous", "folder of the previous release, for the CHANGELOG (default: release.previous)"),
        ),
    ),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}

# Reports a stage reads from another stage (each also a declared dep of the reader).
RELEASE_REPORTS: tuple[str, ...] = ("ingest", "align", "align_accuracy", "qa", "metrics")


def stage(name: str) -> Stage:
    return BY_NAME[name]


def reports_planned(names: tuple[str, ...], source_kind: str) -> tuple[str, ...]:
    """Of `names` (reports/<name>.json), those a stage planned for this data source writes: a lab's recordings
    plan no simulator stage, so the simulator's reports left in git are neither declared nor read."""
    off = {o.path for s in STAGES if s.branch == "simulator" and source_kind != "simulator" for o in s.outs}
    return tuple(n for n in names if f"reports/{n}.json" not in off)


def output_paths(kinds: tuple[str, ...] = ("out", "metric", "plot")) -> list[str]:
    """Every path some stage writes (relative to the root), in stage order."""
    return [o.path for s in STAGES for o in s.outs if o.kind in kinds]


def output_roots() -> list[str]:
    """The folders that hold the pipeline's outputs, outermost only (`data/raw` is input when not simulated)."""
    tops: list[str] = []
    for p in output_paths():
        parts = p.split("/")
        top = "/".join(parts[:2]) if parts[0] == "data" else parts[0]
        if top not in tops:
            tops.append(top)
    return tops
