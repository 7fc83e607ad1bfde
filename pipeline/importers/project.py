"""`mvfer init recordings DIR`: a lab's folder of recordings becomes this project's data source in one step.

It inspects the folder (`pipeline.importers.inspect`), writes the parameter set for real data into
params.yaml (comments kept; only the keys it decides), imports the recordings into the rig layout
ingest reads (hard links, the lab's subject ids, a consent sheet skeleton that a re-run never
overwrites), writes dvc.yaml without the simulator's branch, and says what it decided and what the lab
must still fill in. From then on `dvc repro` runs the lab's data end to end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.consent import read_ledger
from pipeline.errors import PipelineError
from pipeline.importers import run_import
from pipeline.importers.common import IMPORT_REPORT, safe_id
from pipeline.importers.inspect import Proposal, propose
from pipeline.importers.pattern import RECORDINGS
from pipeline.layout import SUBJECTS_NAME, Layout
from pipeline.params import load_params
from pipeline.utils import io

log = logging.getLogger(__name__)

RAW_DIR = "data/recordings"  # the rig layout the import writes (ignored by git: hard links to the lab's files)
EMPTY_EXPORT = "annotations/no_reannotation.json"  # "no one has annotated yet": labels come from the names
INIT_REPORT = "init_report.json"
# split settings written only where params.yaml has them (they came with the split's factor protocols)
IF_PRESENT = frozenset(
    {
        "split.mode_parts",
        "split.leave_one_pose_out",
        "split.leave_one_illumination_out",
        "split.factor_subject_groups",
        "split.drop_incomplete",
        "experiment.primary.protocol",
    }
)


class InitError(PipelineError, ValueError):
    """The project cannot be set up as asked (one line naming the file or option)."""


@dataclass
class InitResult:
    """What init decided and wrote, and what is left to the lab."""

    proposal: Proposal
    params: dict[str, Any]  # dotted key -> value written
    raw_dir: Path
    import_report: dict[str, Any]
    todo: list[str] = field(default_factory=list)
    dvc_yaml: bool = False
    version: str = "0.1.0"


def pilot_settings(p: Proposal) -> dict[str, Any]:
    """The split/feature settings a data set of this size can fill (a pilot of 3 subjects reaches a result)."""
    n_subjects = max(len(p.subjects), 1)
    modes = [m for m in p.modes if m != "unknown"]
    out: dict[str, Any] = {
        "split.labels": "dataset",
        "split.val_subjects": 1,
        "split.min_class_takes": 1,
        "split.subject_kfold_k": max(2, min(n_subjects, 4)),
        "split.unseen_mode_folds": max(2, min(n_subjects, 3)),
        "split.leave_one_mode_out": len(modes) >= 3 and n_subjects >= 6,
        "split.lomo_test_subjects": max(1, n_subjects // 3),
    }
    # the split's factor protocols hold one value of a mode part out: they need 3 values of it to vary in training
    parts: list[str] = []
    for f in (
        f for f in p.mode_fields if f != "pitch"
    ):  # the first of pose/camera/yaw is the pose; others keep their name
        parts.append("pose" if f in ("pose", "camera", "yaw") and "pose" not in parts else f)
    values = {part: {m.split("/")[i] for m in modes if len(m.split("/")) > i} for i, part in enumerate(parts)}
    out |= {
        "split.mode_parts": parts,
        "split.leave_one_pose_out": len(values.get("pose", ())) >= 3 and n_subjects >= 3,
        "split.leave_one_illumination_out": len(values.get("illumination", ())) >= 3 and n_subjects >= 3,
        "split.factor_subject_groups": max(2, min(n_subjects, 3)),
        # a pilot that lost a clip still reaches a result: a class some subject lacks is left out, and said so
        "split.drop_incomplete": "classes",
    }
    if out["split.leave_one_pose_out"] or out["split.leave_one_illumination_out"]:
        # training varies along the held-out factor: the setting the primary test is about (issue 19)
        out["split.seen_modes"] = [sorted(modes)[0]]
        lopo = out["split.leave_one_pose_out"]
        out["features.protocol"] = "leave_one_pose_out" if lopo else "leave_one_illumination_out"
    elif len(modes) >= 2:
        out["split.seen_modes"] = [sorted(modes)[0]]  # train on one mode, test on the others (extrapolation)
        out["features.protocol"] = "unseen_mode"
    else:
        out["split.seen_modes"] = []
        out["features.protocol"] = "subject_kfold"
    out["experiment.primary.protocol"] = out["features.protocol"]  # the pre-registered test is on the protocol run
    # one test set (subject folds): no seen/unseen drop to compare, the primary endpoint is the gain on the test set
    one_set = out["features.protocol"] == "subject_kfold"
    out["experiment.primary.endpoint"] = "test_gain" if one_set else "drop_interaction"
    # cross-fitted features need 2 training subjects per fold (each half encodes the other): a smaller pilot
    # encodes in-sample, which init says (features.crossfit_folds: 0) rather than the features stage refusing
    folds = {"subject_kfold": out["split.subject_kfold_k"], "unseen_mode": out["split.unseen_mode_folds"]}.get(
        out["features.protocol"], out["split.factor_subject_groups"]
    )
    train_subjects = n_subjects - -(-n_subjects // folds) - out["split.val_subjects"]
    out["features.crossfit_folds"] = min(2, train_subjects) if train_subjects >= 2 else 0
    return out


def decide(p: Proposal, src: Path, raw_dir: str, name: str, licence: str, creator: str) -> dict[str, Any]:
    """Every params.yaml key init writes, by dotted key."""
    out: dict[str, Any] = {
        "source.kind": "recordings",
        "source.recordings": str(src.resolve()),
        "import.pattern.template": p.template,
        "import.pattern.maps": {"expression": dict(sorted(p.label_map.items()))} if p.label_map else {},
        "import.pattern.frontal": False,
        "import.pattern.sidecar": "",
        "ingest.raw_dir": raw_dir,
        "ingest.mode_fields": p.mode_fields,
        "qa.snapshot": EMPTY_EXPORT,
        "qa.reannotation_snapshot": EMPTY_EXPORT,
        "qa.truth": "",
        "annotate.gold_truth": "",
        "release.name": name,
        "release.license": licence,
        "release.creator": creator,
        "release.date": date.today().isoformat(),
        "release.previous": None,
    }
    for key, (lo, hi) in p.bounds.items():
        cast = float if key in ("duration_s", "fps") else int
        out[f"ingest.bounds.{key}"] = [cast(lo), cast(hi)]
    out |= pilot_settings(p)
    return out


def write_params(path: Path, values: dict[str, Any]) -> None:
    """Set dotted keys in params.yaml, keeping its comments and every other key (ruamel round trip, atomic)."""
    import io as _io

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = yaml.load(path.read_text(encoding="utf-8"))
    for key, value in values.items():
        *parents, last = key.split(".")
        if key in IF_PRESENT and not _has(doc, key):
            continue  # a setting this version of the pipeline does not have
        node = doc
        for part in parents:
            if part not in node:
                node[part] = CommentedMap()
            node = node[part]
        if isinstance(value, list):
            seq = CommentedSeq(value)
            seq.fa.set_flow_style()
            value = seq
        elif isinstance(value, dict):
            value = _flow_map(value)
        node[last] = value
    buf = _io.StringIO()
    yaml.dump(doc, buf)
    io.write_text(path, buf.getvalue())


def _has(doc: Any, key: str) -> bool:
    node = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _flow_map(d: dict[str, Any]) -> Any:
    from ruamel.yaml.comments import CommentedMap

    m = CommentedMap()
    for k, v in d.items():
        m[k] = _flow_map(v) if isinstance(v, dict) else v
    m.fa.set_flow_style()
    return m


def _gitignore(root: Path, raw_dir: str) -> None:
    """The imported folder holds links to the lab's videos and their consent: never in git."""
    rel = Path(raw_dir)
    if rel.is_absolute():
        return
    line = f"/{rel.as_posix().strip('/')}"
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if line not in text.splitlines():
        io.write_text(path, text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")


def _remove_previous_reports(layout: Layout) -> None:
    """The reports in git describe the data the project ran before (the simulator's): a lab's run that stops
    early must not leave them looking like its own (`dvc metrics show`), so every stage's report goes."""
    from pipeline.stages import STAGES

    for s in STAGES:
        for o in s.outs:
            path = layout.root / o.path
            if o.path.startswith("reports/") and path.is_file():
                path.unlink()
                log.info("removed %s (a report of the previous data)", o.path)


def consent_todo(subjects_csv: Path) -> list[str]:
    """Subjects whose consent the lab has not yet recorded (blank or unreadable), by id."""
    ledger = read_ledger(subjects_csv)
    return sorted(ledger.invalid)


def init_recordings(
    layout: Layout,
    src: Path,
    *,
    raw_dir: str = RAW_DIR,
    name: str | None = None,
    licence: str = "CC-BY-NC-4.0",
    creator: str | None = None,
    write_dvc_yaml: bool = True,
) -> InitResult:
    """Inspect `src`, write params.yaml, import into `raw_dir`, write dvc.yaml; nothing under `src` is written."""
    src = Path(src)
    params = load_params(layout.params_file)
    prop = propose(src, params.rig.expressions, params.rig.illuminations)
    name = name or safe_id(src.resolve().name.lower()) or "recordings"
    creator = creator or "the lab (set release.creator)"
    values = decide(prop, src, raw_dir, name, licence, creator)
    before = layout.params_file.read_bytes()
    write_params(layout.params_file, values)
    out = layout.resolve(raw_dir)
    try:  # validated and imported before init counts as done: on a refusal params.yaml is as it was
        params = load_params(layout.params_file)  # a value init wrote that the schema refuses is one line
        report = run_import(RECORDINGS, src, out, params.import_, params.rig.expressions)
    except BaseException:
        io.write_bytes(layout.params_file, before)
        raise
    _gitignore(layout.root, raw_dir)
    _remove_previous_reports(layout)
    result = InitResult(prop, values, out, report, version=params.release.version)
    if write_dvc_yaml:
        result.dvc_yaml = _write_dvc_yaml(layout)
    todo = consent_todo(out / SUBJECTS_NAME)
    if todo:
        result.todo.append(
            f"consent: fill consent_research, consent_public_release and withdrawn (true/false) for "
            f"{len(todo)} subject(s) ({', '.join(todo)}) in {layout.relative(out / SUBJECTS_NAME)}; until then "
            "ingest quarantines their takes"
        )
    if prop.unmapped_labels:
        result.todo.append(
            f"labels {', '.join(prop.unmapped_labels)} are not expression names: map them in "
            "import.pattern.maps.expression (params.yaml), then `mvfer import recordings "
            f"{src} --out {raw_dir}`"
        )
    if creator.startswith("the lab"):
        result.todo.append("release: set release.creator and release.url in params.yaml (the release's citation)")
    io.write_json(out / INIT_REPORT, init_report(result, src))
    return result


def _write_dvc_yaml(layout: Layout) -> bool:
    """dvc.yaml for this data source, when this project holds the pipeline code (a checkout of mvfer)."""
    from pipeline.dvcyaml import render
    from pipeline.stage import CODE_ROOT

    if layout.root != CODE_ROOT:
        log.warning("dvc.yaml not written: run `mvfer dvc-yaml --write` in the checkout that holds the code")
        return False
    io.write_text(layout.root / "dvc.yaml", render(layout.root))
    return True


def init_report(r: InitResult, src: Path) -> dict[str, Any]:
    p = r.proposal
    return {
        "source": str(src.resolve()),
        "template": p.template,
        "label_map": p.label_map,
        "fields": p.fields,
        "mode_fields": p.mode_fields,
        "modes": p.modes,
        "subjects": p.subjects,
        "fps": p.fps,
        "clips": [c.__dict__ for c in p.clips],
        "warts": [w.__dict__ for w in p.warts],
        "notes": p.notes,
        "params_written": r.params,
        "imported_takes": r.import_report["takes"],
        "excluded_by_import": r.import_report["excluded_items"],
        "todo": r.todo,
    }


def _features_line(crossfit_folds: int) -> str:
    if crossfit_folds:
        return f"features   cross-fitted over {crossfit_folds} groups of training subjects (each encoded out of fold)"
    return "features   encoded in-sample (features.crossfit_folds: 0): a fold has under 2 training subjects"


def summary(r: InitResult, root: Path) -> str:
    """What init decided and what the lab must still do, as the command prints it."""
    p = r.proposal
    rep = r.import_report
    raw = Layout(root).relative(r.raw_dir)
    lines = [
        f"template   {p.template}",
        f"labels     {', '.join(p.fields['expression'])}"
        + (f" (mapped: {', '.join(f'{k} -> {v}' for k, v in p.label_map.items())})" if p.label_map else ""),
        f"subjects   {len(p.subjects)}: {', '.join(p.subjects)} (the lab's ids, as named)",
        f"modes      {', '.join(p.modes)} (ingest.mode_fields: {p.mode_fields})",
        f"probed     {len(p.clips)} clips" + (f" at {p.fps:g} fps" if p.fps else "") + " (frame rate from each file)",
        f"protocol   {r.params['features.protocol']}"
        + (f", seen mode {r.params['split.seen_modes'][0]}" if r.params.get("split.seen_modes") else "")
        + f"; labels from the names (split.labels: dataset); release {r.params['release.name']} "
        f"({r.params['release.license']})",
        _features_line(r.params.get("features.crossfit_folds", 0)),
        f"imported   {rep['takes']} takes into {raw} ({rep['excluded']} files not imported)",
    ]
    shown = [w.reason for w in p.warts] + [
        i["reason"] for i in rep["excluded_items"] if i["path"] not in {w.path for w in p.warts}
    ]
    if shown:
        lines.append(f"not usable ({len(shown)}):")
        lines += [f"  - {s}" for s in shown]
    lines += [f"note       {n}" for n in p.notes]
    lines.append(f"wrote      params.yaml, {raw}/ ({SUBJECTS_NAME}, {IMPORT_REPORT}, {INIT_REPORT})")
    lines.append("           dvc.yaml (without the simulator)" if r.dvc_yaml else "")
    if r.todo:
        lines.append("to do:")
        lines += [f"  {i + 1}. {t}" for i, t in enumerate(r.todo)]
    release = f"release/{r.params['release.name']}-{r.version}"
    lines.append(f"then:      dvc repro && mvfer release verify {release}")
    return "\n".join(line for line in lines if line) + "\n"
