"""Typed parameters, read once from `params.yaml`.

Unknown or missing keys fail loudly (pydantic, extra="forbid"), so a typo in params.yaml is an
error naming the key rather than a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import PipelineError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pose(_Strict):
    """One camera of the rig: the head pose it sees, in degrees (yaw > 0: subject turned to camera-right)."""

    camera: str
    yaw: float = Field(ge=-60, le=60)
    pitch: float = Field(ge=-45, le=45)


class RigParams(_Strict):
    """What the capture rig can record; ingest validates the capture log against it."""

    expressions: list[str]
    illuminations: list[str]


class CaptureParams(_Strict):
    seed: int
    n_subjects: Annotated[int, Field(ge=1)]
    n_withdrawn: Annotated[int, Field(ge=0)]
    n_no_public_release: Annotated[int, Field(ge=0)]
    expressions: list[str]
    poses: list[Pose]
    illuminations: list[str]
    frame_size: Annotated[int, Field(ge=64, le=1024)]
    fps: Annotated[float, Field(gt=0)]
    n_frames: Annotated[int, Field(ge=4)]
    return_to_neutral: bool
    sessions: Annotated[int, Field(ge=1)]
    workers: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _consistent(self) -> CaptureParams:
        if self.n_withdrawn + self.n_no_public_release > self.n_subjects:
            raise ValueError("n_withdrawn + n_no_public_release exceeds n_subjects")
        return self


class CaptureVerifyParams(_Strict):
    every_nth_frame: Annotated[int, Field(ge=1)]
    min_face_px: Annotated[int, Field(ge=12)]
    thresholds: tuple[float, float, float]


class Bounds(_Strict):
    fps: tuple[float, float]
    n_frames: tuple[int, int]
    width: tuple[int, int]
    height: tuple[int, int]
    duration_s: tuple[float, float]


class IngestParams(_Strict):
    raw_dir: str
    workers: Annotated[int, Field(ge=1)]
    bounds: Bounds
    fps_tolerance: Annotated[float, Field(ge=0)]
    probe_timeout_s: Annotated[float, Field(gt=0)]
    mode_fields: Annotated[list[str], Field(min_length=1)]  # capture-log columns that define a mode (pipeline/modes.py)


class AlignThresholds(_Strict):
    min_detection_rate: Annotated[float, Field(ge=0, le=1)]
    max_gap_frames: Annotated[int, Field(ge=0)]
    min_iod_px: Annotated[float, Field(ge=0)]
    min_blur: Annotated[float, Field(ge=0)]


class AlignParams(_Strict):
    detector: str  # a name in pipeline.align.detectors.DETECTORS, checked by the align stage first thing
    insightface_pack: str
    min_face_px: Annotated[int, Field(ge=8)]
    precision: Literal["float32", "float64"]  # mtcnn only; insightface runs onnxruntime's float32
    crop_size: Annotated[int, Field(ge=32)]
    keyframe_every: Annotated[int, Field(ge=1)]
    max_fb_error: Annotated[float, Field(gt=0)]
    max_jump: Annotated[float, Field(gt=0)]
    reacquire_radius: Annotated[float, Field(gt=0)]
    min_appearance: Annotated[float, Field(ge=-1, le=1)]
    dark_threshold: Annotated[float, Field(ge=0, le=255)]
    workers: Annotated[int, Field(ge=1)]
    thresholds: AlignThresholds


class MediaParams(_Strict):
    """Browser-playable proxies (stage media): H.264 in MP4 that Chromium and Firefox decode."""

    crf: Annotated[int, Field(ge=0, le=51)]
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
    keyframe_every: Annotated[int, Field(ge=1)]
    min_height: Annotated[int, Field(ge=2, le=4320)]
    passthrough_playable: bool
    workers: Annotated[int, Field(ge=1)]


class SplitParams(_Strict):
    seed: int
    labels: Literal["prompted", "qa", "dataset"]  # dataset: the imported dataset's own labels
    val_subjects: Annotated[int, Field(ge=1)]
    min_class_takes: Annotated[int, Field(ge=1)]
    near_duplicate_max_bits: Annotated[int, Field(ge=0)]
    subject_kfold_k: Annotated[int, Field(ge=2)]
    seen_modes: list[str]
    unseen_mode_folds: Annotated[int, Field(ge=2)]
    leave_one_mode_out: bool
    lomo_test_subjects: Annotated[int, Field(ge=1)]
    official_folds: bool  # the imported dataset's own folds (manifest official_fold) as protocol `official`
    official_val_fraction: Annotated[float, Field(ge=0, lt=1)]  # of each official training set, for early stopping
    mode_parts: Annotated[list[str], Field(min_length=1)]  # names of the `/`-parts of a mode (pose, illumination)
    leave_one_pose_out: bool  # protocol: train on the other poses under every light, test the held-out pose
    leave_one_illumination_out: bool  # protocol: the same with illuminations
    factor_subject_groups: Annotated[int, Field(ge=2)]  # test subject groups of the leave-one-factor-out protocols
    factor_rotation: Literal["rotated", "crossed"]  # rotated: values and groups cycle together; crossed: every pair
    drop_incomplete: Literal["none", "subjects", "classes"]  # a subject lacking a class: keep, drop it, drop the class


class PrimaryTest(_Strict):
    """The one pre-registered test, declared before any result is seen; every other comparison is secondary."""

    protocol: str  # a split protocol (features.protocol must name it for evaluate to run the test)
    backend: str  # a feature backend in features.backends
    candidate: str  # a model variant
    baseline: str  # the variant it is compared with, paired on run and take
    # drop_interaction: (candidate - baseline) on unseen modes minus the same on seen modes; unseen_gain: on unseen
    # modes only; test_gain: on the one test set of a protocol without seen/unseen sets (subject_kfold, official)
    endpoint: Literal["drop_interaction", "unseen_gain", "test_gain"]

    @model_validator(mode="after")
    def _endpoint_fits_protocol(self) -> PrimaryTest:
        one_set = self.protocol in ("subject_kfold", "official")
        if one_set != (self.endpoint == "test_gain"):
            fits = "test_gain" if one_set else "drop_interaction or unseen_gain"
            raise ValueError(
                f"experiment.primary.endpoint: {self.endpoint} cannot be tested on protocol {self.protocol} "
                f"(use {fits})"
            )
        return self


class ExperimentParams(_Strict):
    """The experiment's inference: the primary test and how every comparison is tested (stage `evaluate`)."""

    primary: PrimaryTest
    alpha: Annotated[float, Field(gt=0, lt=1)]
    n_boot: Annotated[int, Field(ge=100)]  # joint bootstrap draws (over test subjects and training runs)
    boot_seed: int


class FeaturesParams(_Strict):
    protocol: str
    input_size: Annotated[int, Field(ge=16)]
    feature_dim: Annotated[int, Field(ge=8)]
    frames_per_take: Annotated[int, Field(ge=1)]
    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0)]
    backends: Annotated[
        list[str], Field(min_length=1)
    ]  # names in pipeline/learn/backends BACKENDS, checked by the stage
    seeds: Annotated[list[int], Field(min_length=1)]  # feature extractors; sequence-model seeds cycle over them
    workers: Annotated[int, Field(ge=1)]  # extractors fitted in parallel, one thread each
    # K >= 2: each training take is encoded by a CNN fitted on the other K-1 groups of training subjects
    # (out of fold), each val/test subject by one of the K in turn; 0: one CNN on all training takes encodes all
    crossfit_folds: Annotated[int, Field(ge=0)] = 0
    # what a frame becomes: the CNN's penultimate layer (`embedding`) or its class scores (`logits`); cross-fitting
    # needs logits (the embeddings of different CNNs are not in correspondence, their class scores are)
    encoding: Literal["embedding", "logits"] = "embedding"

    @model_validator(mode="after")
    def _crossfit(self) -> FeaturesParams:
        if self.crossfit_folds == 1:
            raise ValueError("features.crossfit_folds: 1 is not a cross-fit (0: off, or at least 2 folds)")
        if self.crossfit_folds and self.encoding != "logits":
            raise ValueError(
                "features.crossfit_folds needs features.encoding: logits (each training take is encoded by one of "
                "several CNNs, whose embeddings are not in correspondence; their class scores are)"
            )
        return self


class TrainParams(_Strict):
    variants: list[str]  # names in pipeline/models/registry.py VARIANTS, checked by the train and evaluate stages
    seeds: list[int]
    hidden: Annotated[int, Field(ge=1)]
    epochs: Annotated[int, Field(ge=1)]
    patience: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0)]
    weight_decay: Annotated[float, Field(ge=0)]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    mode_loss_weight: Annotated[float, Field(ge=0)]
    adversarial_weight: Annotated[float, Field(ge=0)]
    workers: Annotated[int, Field(ge=1)]  # model fits in parallel, one thread each
    # settings chosen on the validation subjects (lowest validation loss), the same grid for every variant:
    # key (lr, weight_decay, dropout, patience, mode_loss_weight, adversarial_weight) -> values; {}: the values above
    search: dict[
        Literal["lr", "weight_decay", "dropout", "patience", "mode_loss_weight", "adversarial_weight"],
        Annotated[list[float], Field(min_length=1)],
    ] = {}


class AnnotatorProfile(_Strict):
    """A simulated annotator of known reliability (kind: careful, noisy, confuser, spammer)."""

    id: int
    name: str
    kind: Literal["careful", "noisy", "confuser", "spammer"]
    accuracy: Annotated[float, Field(ge=0, le=1)]
    confusion_rate: Annotated[float, Field(ge=0, le=1)]
    frame_sigma: Annotated[float, Field(ge=0)]
    mean_lead_time_s: Annotated[float, Field(gt=0)]


class QASimParams(_Strict):
    seed: int
    annotators: list[AnnotatorProfile]
    expert_id: int
    annotators_per_task: Annotated[int, Field(ge=1)]
    gold_fraction: Annotated[float, Field(ge=0, le=1)]
    cancel_rate: Annotated[float, Field(ge=0, le=1)]
    draft_rate: Annotated[float, Field(ge=0, le=1)]
    round2_annotators_per_task: Annotated[
        int, Field(ge=0)
    ]  # the re-annotation queue, answered by unflagged annotators; 0: no round


class AnnotateParams(_Strict):
    """`mvfer annotate push/pull`: what annotators see and how tasks are served (issue 9)."""

    prefill: Literal["none", "prompted", "model"]  # pre-ticked expression; none: no anchoring
    show_prompt: bool  # the task header names the prompted expression
    overlap: Annotated[int, Field(ge=1)]  # different annotators per task
    gold_fraction: Annotated[float, Field(ge=0, le=1)]  # share of tasks carrying an expert's answer
    gold_truth: str  # CSV take_id, expression[, onset_frame, apex_frame] (0-based); "" for no gold tasks
    order: Literal["sequential", "uncertainty"]  # uncertainty: the model's least sure takes first (needs --guesses)
    seed: int


class QAThresholds(_Strict):
    alpha_acceptable: float
    alpha_good: float
    min_confidence: Annotated[float, Field(ge=0, le=1)]
    min_annotations: Annotated[int, Field(ge=1)]
    min_agreement: Annotated[float, Field(ge=0, le=1)]
    spammer_score_max: Annotated[float, Field(ge=0, le=1)]
    confusion_rate_max: Annotated[float, Field(ge=0, le=1)]
    min_gold_accuracy: Annotated[float, Field(ge=0, le=1)]
    fast_lead_time_z: Annotated[float, Field(gt=0)]
    min_lead_time_s: Annotated[float, Field(ge=0)]  # an annotation submitted faster than this is flagged too_fast
    # an annotator is flagged for a confusion, gold accuracy or spamming only on at least this many items
    # (of that class, of gold, in all); every flag states its count and a 95 % Wilson interval
    min_items_for_flag: Annotated[int, Field(ge=1)] = 10


class QAParams(_Strict):
    snapshot: str
    # export of the re-annotation queue's project, merged with `snapshot`; annotations/no_reannotation.json ("[]")
    # for none: a file that always exists, so DVC can declare it as a dependency
    reannotation_snapshot: Annotated[str, Field(min_length=1)]
    truth: str
    thresholds: QAThresholds


class ReleaseParams(_Strict):
    name: str
    version: str
    date: str  # fixes every timestamp inside the archive (reproducible builds)
    license: Literal["CC-BY-NC-4.0", "CC-BY-4.0"]
    include_raw: bool
    creator: str
    url: str
    previous: str | None = Field(description="folder of the previous release the CHANGELOG compares with; null: none")


class ImportLicence(_Strict):
    """The dataset's own licence terms: stated, they stand in for per-subject consent (research only)."""

    terms: str  # e.g. "Oulu-CASIA end-user licence agreement, signed 2026-01-12"; empty: none
    research_use: bool
    redistribution: bool  # the licence allows a public release of the data (the public sets do not)


class PatternImport(_Strict):
    # e.g. "{subject}/{expression}/{subject}_{expression}_{pose}.mp4": a field may repeat (same value), `*` matches
    # any text inside one path component, `**/` any number of folders
    template: str
    # field -> {value in the path: value written}; a label that is already an expression name needs no entry
    maps: dict[str, dict[str, str]]
    frontal: bool = False  # true: the lab states every take faces the camera (yaw and pitch 0); false: from the names
    sidecar: str = ""  # CSV in the source (relative path): a `file` column, any of yaw, pitch, illumination, camera


class ImportParams(_Strict):
    """`mvfer import <layout>` (pipeline/importers): not a DVC stage; the rig layout it writes is ingest's input."""

    copy_files: bool = Field(alias="copy")  # false: hard-link the source files (no bytes copied); true: copy them
    fps: dict[str, float]  # per layout: frame folders carry no frame rate
    label_maps: dict[str, dict[str, str]]  # per layout (and `folder` for label folders): code -> expression
    pattern: PatternImport
    licence: ImportLicence

    @model_validator(mode="after")
    def _positive_fps(self) -> ImportParams:
        # Which layouts need which keys is the importers' business (pipeline/importers: run_import names a
        # missing `import.fps.<layout>` or `import.label_maps.<map>` in one line): no second list of layouts here.
        bad = [k for k, v in self.fps.items() if not v > 0]
        if bad:
            raise ValueError(f"fps.{bad[0]} must be > 0")
        return self


class SourceParams(_Strict):
    """Where the takes come from: the built-in capture simulator (its stages are an optional branch of the
    pipeline, planned only for this kind) or a lab's own recordings (`mvfer init recordings DIR`)."""

    kind: Literal["simulator", "recordings"] = "simulator"
    recordings: str = ""  # the lab's folder, read only; imported into ingest.raw_dir by `mvfer import recordings`


class ExecutorParams(_Strict):
    """Where the per-item stages (capture, verification, align, media) map their work (ingest's probe keeps
    its own supervised pool: a per-take timeout and crash isolation):
    local processes, or a Dask cluster (`dask_scheduler` address, $MVFER_DASK_SCHEDULER, or a LocalCluster
    when both are empty). Each stage keeps its own `workers`."""

    kind: Literal["local", "dask"] = "local"
    dask_scheduler: str = ""


class Params(_Strict):
    rig: RigParams
    executor: ExecutorParams
    capture: CaptureParams
    capture_verify: CaptureVerifyParams
    ingest: IngestParams
    align: AlignParams
    media: MediaParams
    split: SplitParams
    features: FeaturesParams
    train: TrainParams
    experiment: ExperimentParams
    annotate_sim: QASimParams
    annotate: AnnotateParams
    qa: QAParams
    release: ReleaseParams
    import_: ImportParams = Field(alias="import")
    source: SourceParams = SourceParams()

    @model_validator(mode="after")
    def _within_rig(self) -> Params:
        for e in self.capture.expressions:
            if e not in self.rig.expressions:
                raise ValueError(f"capture.expressions: {e!r} is not in rig.expressions")
        for i in self.capture.illuminations:
            if i not in self.rig.illuminations:
                raise ValueError(f"capture.illuminations: {i!r} is not in rig.illuminations")
        return self


class ParamsError(PipelineError, ValueError):
    """params.yaml is missing, unreadable or does not match the schema."""


def load_params(path: Path) -> Params:
    """Parse and validate params.yaml; errors name the file and the offending key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ParamsError(f"{path}: file not found") from e
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ParamsError("\n".join(lines)) from e
