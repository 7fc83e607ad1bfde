"""`dvc repro` for real, in a temporary clone with a tiny capture: runs, then is a no-op, and a
parameter change reruns only the stages that declare it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.layout import Layout
from tests.checkout import copy_checkout

ROOT = Layout.discover(Path(__file__).parent).root

pytestmark = pytest.mark.integration

TINY = {
    "n_subjects": 7,
    "n_withdrawn": 1,
    "n_no_public_release": 1,
    "expressions": ["happiness", "surprise"],
    "poses": [{"camera": "cam_c", "yaw": 0.0, "pitch": 0.0}, {"camera": "cam_r30", "yaw": 30.0, "pitch": 0.0}],
    "illuminations": ["frontal", "dim"],
    "frame_size": 96,
    "n_frames": 8,
    "workers": 1,
}


def _run(args: list[str], cwd: Path, first_on_path: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MVFER_ROOT"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if first_on_path is not None:
        env["PATH"] = f"{first_on_path}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's files (as git would clone them) in a fresh repository with tiny params."""
    dest = tmp_path_factory.mktemp("clone")
    copy_checkout(ROOT, dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["capture"].update(TINY)
    params["ingest"]["workers"] = 1
    params["align"]["workers"] = 1
    params["split"].update(
        {
            "val_subjects": 1,
            "min_class_takes": 12,
            "subject_kfold_k": 3,
            "unseen_mode_folds": 3,
            "lomo_test_subjects": 2,
            "leave_one_pose_out": False,  # two poses, two lights: nothing varies once one is held out
            "leave_one_illumination_out": False,
            "seen_modes": ["yaw+0_pitch+0/frontal", "yaw+0_pitch+0/dim"],
        }
    )
    params["features"].update(
        {
            "protocol": "unseen_mode",  # two poses: no leave-one-pose-out here (the primary test reports "not run")
            "epochs": 2,
            "frames_per_take": 4,
            "backends": ["cnn_delta"],
            "seeds": [0],
            "workers": 1,
        }
    )
    params["train"].update({"variants": ["lstm", "mv_lstm"], "seeds": [0], "epochs": 3, "patience": 2, "workers": 1})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], dest)
    _run(["dvc", "repro"], dest, first_on_path=_traced_python(_traces(dest)))
    for name in ("dvc.yaml", "params.yaml"):  # the deps as they were when the traced run read its files
        shutil.copy2(dest / name, _traces(dest) / name)
    return dest


def _traces(clone: Path) -> Path:
    return clone.with_name(f"{clone.name}_traces")


def _traced_python(traces: Path) -> Path:
    """A `python` first on PATH that runs the real one under strace, one log per stage module.

    Why: the one `dvc repro` that builds the clone is also the run whose file reads
    `test_every_stage_reads_only_what_it_declares` checks, instead of a second build of every stage.
    Only stage commands (`python -m pipeline...`) go through it: DVC itself runs on its own interpreter.
    """
    strace = shutil.which("strace")
    assert strace, "strace not installed: `make test` installs it (Debian package strace)"
    traces.mkdir(parents=True, exist_ok=True)
    shim = traces.with_name(f"{traces.name}_bin")
    shim.mkdir(exist_ok=True)
    (shim / "python").write_text(
        "#!/bin/sh\n"
        f'exec {strace} -f -qq -y --seccomp-bpf -e trace=open,openat -o "{traces}/$2.strace" {sys.executable} "$@"\n'
    )
    (shim / "python").chmod(0o755)
    return shim


def test_repro_builds_the_manifest_and_quarantines_the_withdrawn_subject(clone: Path) -> None:
    align = json.loads((clone / "reports" / "align.json").read_text())
    assert align["takes"] == align["takes_processed"] > 0
    assert (clone / "reports" / "align_accuracy.json").exists()
    report = json.loads((clone / "reports" / "ingest.json").read_text())
    takes = 7 * 2 * 2 * 2
    assert report["log_rows"] == report["files_found"] == report["manifest_rows"] == takes
    assert report["quarantined_by_reason"] == {"consent_withdrawn": takes // 7}
    assert report["accepted"] == takes - takes // 7
    verify = json.loads((clone / "reports" / "capture_verify.json").read_text())
    assert set(verify["illumination"]) == {"frontal", "dim"}
    capture = json.loads((clone / "reports" / "capture.json").read_text())
    assert capture["frames_per_s_per_core"] > 0


def test_repro_splits_trains_and_evaluates(clone: Path) -> None:
    splits = json.loads((clone / "reports" / "splits.json").read_text())
    assert splits["subjects"] == 6 and "QA" in splits["labels"]
    qa = json.loads((clone / "reports" / "qa.json").read_text())
    assert qa["annotations_used"] > 0 and "krippendorff_alpha" in qa["agreement"]
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    assert set(metrics["backends"]["cnn_delta"]) == {"lstm", "mv_lstm"}
    seen = set(yaml.safe_load((clone / "params.yaml").read_text())["split"]["seen_modes"])
    for m in metrics["backends"]["cnn_delta"].values():
        # the unseen accuracy pools the unseen modes' takes: it lies between their per-mode accuracies,
        # and the drop is seen minus unseen (both pooled the same way, per seed)
        unseen = [acc for mode, acc in m["per_mode_accuracy"].items() if mode not in seen]
        assert unseen and min(unseen) - 1e-3 <= m["test_unseen_accuracy_mean"] <= max(unseen) + 1e-3
        assert abs(m["drop_accuracy_mean"] - (m["test_seen_accuracy_mean"] - m["test_unseen_accuracy_mean"])) <= 1e-3
    assert "p_value" in metrics["verdicts"]["cnn_delta"]["mv_lstm_vs_lstm"]
    assert (clone / "models" / "unseen_mode" / "cnn_delta" / "mv_lstm" / "fold0_seed0.pt").exists()
    guesses = (clone / "reports" / "predictions.csv").read_text().splitlines()
    assert guesses[0] == "take_id,label,confidence,model_version" and len(guesses) > 1
    assert (clone / "reports" / "plots" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    shown = _run(["dvc", "metrics", "show", "--json"], clone).stdout
    assert "test_unseen_accuracy_mean" in shown


def test_second_repro_is_a_no_op(clone: Path) -> None:
    out = _run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in out
    assert json.loads(_run(["dvc", "status", "--json"], clone).stdout) == {}


def test_a_cli_help_edit_reruns_nothing_and_a_module_edit_only_its_importers(clone: Path) -> None:
    """No stage imports the CLI: editing a help text leaves `dvc status` clean; editing media's encoder
    touches media alone, editing the release's datasheet the release alone."""
    edits = {
        "pipeline/cli.py": "media",
        "pipeline/media/encode.py": "media",
        "pipeline/release/datasheet.py": "release",
    }
    for rel in edits:
        assert (clone / rel).is_file(), rel
    cli = clone / "pipeline" / "cli.py"
    original = {rel: (clone / rel).read_text() for rel in edits}
    try:
        cli.write_text(original["pipeline/cli.py"].replace("debug logging", "debug logging (verbose)"))
        assert json.loads(_run(["dvc", "status", "--json"], clone).stdout) == {}
        for rel, stage in list(edits.items())[1:]:
            (clone / rel).write_text(original[rel] + "\n# an edit\n")
            assert set(json.loads(_run(["dvc", "status", "--json"], clone).stdout)) == {stage}
            (clone / rel).write_text(original[rel])
    finally:
        for rel, text in original.items():
            (clone / rel).write_text(text)


def test_an_ingest_parameter_change_touches_only_ingest(clone: Path) -> None:
    text = (clone / "params.yaml").read_text()
    params = yaml.safe_load(text)
    params["ingest"]["fps_tolerance"] = 0.04
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(_run(["dvc", "status", "--json"], clone).stdout)
    (clone / "params.yaml").write_text(text)
    assert set(status) == {"ingest"}


def _use_rig_export(clone: Path) -> Path:
    """Point ingest at a copy of the capture without its truth, as a real rig's export (idempotent,
    so that every test that needs it can call it whatever order the tests run in)."""
    rig = clone / "rig_export"
    if not rig.exists():
        shutil.copytree(clone / "data" / "raw", rig, ignore=shutil.ignore_patterns("_truth"))
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["ingest"]["raw_dir"] = "rig_export"
    params["align"]["workers"] = 1
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return rig


def test_a_rig_folder_and_one_new_take_through_dvc(clone: Path) -> None:
    """A real rig's export folder replaces the simulator by one parameter; one new take, one job."""
    rig = _use_rig_export(clone)
    _run(["dvc", "repro", "align"], clone)
    first = json.loads((clone / "reports" / "align.json").read_text())
    assert first["takes_processed"] == 0  # same bytes, same parameters: nothing to redo

    import pandas as pd

    log = pd.read_csv(rig / "capture_log.csv")
    accepted = pd.read_parquet(clone / "data" / "interim" / "manifest.parquet").query("status == 'accepted'")
    src = log[log["take_id"] == accepted["take_id"].iloc[0]].iloc[0].copy()
    src_file = rig / src["file"]
    src["take_id"], src["file"] = "pf90000-cam_c", "takes/pf90000-cam_c.mp4"
    (rig / src["file"]).write_bytes(src_file.read_bytes() + b"\0" * 16)
    pd.concat([log, src.to_frame().T]).to_csv(rig / "capture_log.csv", index=False)
    out = _run(["dvc", "repro", "align"], clone).stdout
    assert "Running stage 'capture'" not in out
    second = json.loads((clone / "reports" / "align.json").read_text())
    assert second["takes_processed"] == 1 and second["takes_up_to_date"] == first["takes"]
    assert json.loads(_run(["dvc", "status", "--json", "align"], clone).stdout) == {}


# ------------------------------------------------------------------ releases (issue: dataset releases)


def _release(clone: Path, version: str = "0.1.0") -> Path:
    return clone / "release" / f"mvfer-sim-{version}"


def _sha(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_release_croissant_validates_and_loads_with_mlcroissant(clone: Path) -> None:
    import mlcroissant as mlc
    import pandas as pd

    rel = _release(clone)
    ds = mlc.Dataset(jsonld=str(rel / "croissant.json"))
    records = list(ds.records(record_set="labels"))
    labels = pd.read_csv(rel / "metadata" / "labels.csv")
    assert len(records) == len(labels) > 0
    assert sorted(r["labels/take_id"].decode() for r in records) == sorted(labels["take_id"])
    by_id = {r["labels/take_id"].decode(): r for r in records}
    row = labels.iloc[0]
    assert by_id[row["take_id"]]["labels/label"].decode() == row["label"]
    doc = json.loads((rel / "croissant.json").read_text())
    assert doc["rai:personalSensitiveInformation"] and doc["rai:dataAnnotationPlatform"].startswith("Label Studio")
    assert all(len(f["sha256"]) == 64 for f in doc["distribution"])
    sheet = (rel / "DATASHEET.md").read_text()
    for section in (
        "## Motivation",
        "## Composition",
        "## Collection process",
        "## Preprocessing and labelling",
        "## Uses",
        "## Distribution",
        "## Maintenance",
    ):
        assert section in sheet
    assert f"{len(labels)} takes" in sheet


def test_release_rebuild_is_byte_identical_and_verifies(clone: Path) -> None:
    archive = clone / "release" / "mvfer-sim-0.1.0.tar.gz"
    _run([sys.executable, "-m", "pipeline", "release", "build"], clone)  # the inputs as they are now
    first = _sha(archive)
    _run([sys.executable, "-m", "pipeline", "release", "build"], clone)
    assert _sha(archive) == first
    ok = _run([sys.executable, "-m", "pipeline", "release", "verify", str(archive)], clone)
    assert "OK" in ok.stdout
    tampered = clone / "tampered"
    shutil.copytree(_release(clone), tampered)
    next((tampered / "aligned").iterdir()).write_bytes(b"changed")
    env = {k: v for k, v in os.environ.items() if k != "MVFER_ROOT"}
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "release", "verify", str(tampered)],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "altered: aligned/" in res.stderr
    shutil.rmtree(tampered)


def test_a_withdrawal_rebuilds_a_release_without_the_subject(clone: Path) -> None:
    """The capture is read from rig_export/, as a lab whose subject withdraws after acceptance."""
    import pandas as pd

    rig = _use_rig_export(clone)
    _run(["dvc", "repro", "release"], clone)
    released = pd.read_csv(_release(clone) / "metadata" / "takes.csv")
    victim = released["subject"].iloc[0]
    subjects = pd.read_csv(rig / "subjects.csv", dtype=str, keep_default_na=False)
    subjects.loc[subjects["subject_id"] == victim, ["withdrawn", "withdrawn_date"]] = ["True", "2026-11-01"]
    subjects.to_csv(rig / "subjects.csv", index=False)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["release"]["version"] = "0.2.0"
    params["release"]["previous"] = "release/mvfer-sim-0.1.0"  # an explicit input, never guessed from disk
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["dvc", "repro", "release"], clone)
    new = pd.read_csv(_release(clone, "0.2.0") / "metadata" / "takes.csv")
    assert victim not in set(new["subject"]) and len(new) < len(released) + 2
    splits = (_release(clone, "0.2.0") / "metadata" / "splits.csv").read_text()
    assert all(t not in splits for t in released.loc[released["subject"] == victim, "take_id"])
    log = (_release(clone, "0.2.0") / "CHANGELOG.md").read_text()
    assert "Compared with mvfer-sim-0.1.0" in log and "subjects added: 0; removed: 1" in log and victim not in log
    report = json.loads((clone / "reports" / "release.json").read_text())
    assert victim not in json.dumps(report)


def _git_commit(repo: Path) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "state", "--allow-empty"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True, env={**os.environ, **env})


def _pull_and_verify(clone: Path, dest: Path, remote: str, extra_env: dict | None = None) -> None:
    subprocess.run(["git", "clone", "-q", str(clone), str(dest)], check=True)
    env = {**os.environ, **(extra_env or {})}
    res = subprocess.run(
        ["dvc", "pull", "-r", remote, "release"],
        cwd=dest,
        capture_output=True,
        text=True,
        env={**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"},
    )
    assert res.returncode == 0, res.stderr
    version = yaml.safe_load((clone / "params.yaml").read_text())["release"]["version"]
    rel = dest / "release" / f"mvfer-sim-{version}"
    assert rel.is_dir() and (rel / "SHA256SUMS").is_file()
    out = _run([sys.executable, "-m", "pipeline", "release", "verify", str(rel)], dest)
    assert "OK" in out.stdout


def test_publish_to_a_local_remote_and_pull_into_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
    _run(["dvc", "remote", "add", "-f", "localremote", str(tmp_path / "remote")], clone)
    _git_commit(clone)
    _run(["dvc", "push", "-r", "localremote", "release"], clone)
    _pull_and_verify(clone, tmp_path / "fresh", "localremote")


def test_publish_to_s3_on_a_local_moto_server(clone: Path, tmp_path: Path) -> None:
    moto = ROOT / ".venv-s3" / "bin" / "moto_server"
    assert moto.exists(), "moto server not installed: `make test` builds .venv-s3"
    import signal
    import socket
    import time
    import urllib.request

    import dvc_s3  # noqa: F401  (in the lock: a missing plugin is a broken install, not a skip)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        urllib.request.urlopen(urllib.request.Request(f"{url}/mvfer-releases", method="PUT"), timeout=5)
        _run(["dvc", "remote", "add", "-f", "s3remote", "s3://mvfer-releases/dvc"], clone)
        _run(["dvc", "remote", "modify", "s3remote", "endpointurl", url], clone)
        _git_commit(clone)
        res = subprocess.run(
            ["dvc", "push", "-r", "s3remote", "release"],
            cwd=clone,
            capture_output=True,
            text=True,
            env={
                **os.environ,
                **creds,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
        )
        assert res.returncode == 0, res.stderr
        _pull_and_verify(clone, tmp_path / "fresh_s3", "s3remote", creds)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def test_every_stage_reads_only_what_it_declares(clone: Path) -> None:
    """Each stage's command, as the fixture's `dvc repro` ran it under strace, opens no repository file outside
    its deps and outs (the C libraries' reads included: parquet, video and npz files are opened by C code)."""
    from tests.dvc_deps import load_stages, parse_strace_opens, undeclared_reads

    traces = _traces(clone)  # written by the fixture's one `dvc repro` (_traced_python)
    problems = {}
    for stage in load_stages(traces):  # later tests change params (ingest.raw_dir): the deps of the traced run
        words = stage.cmd.split()
        assert words[:2] == ["python", "-m"], f"stage {stage.name}: {stage.cmd} is not `python -m <module>`"
        log = traces / f"{words[2]}.strace"
        assert log.is_file(), f"stage {stage.name} did not run in the fixture's dvc repro (no {log.name})"
        bad = undeclared_reads(clone, stage, parse_strace_opens(log.read_text(), clone))
        if bad:
            problems[stage.name] = bad
    assert not problems, f"stages read files their dvc.yaml deps do not declare: {problems}"


def test_another_cpu_code_path_gives_the_same_release_bytes(clone: Path, tmp_path: Path) -> None:
    """Align, split and release rebuilt with PyTorch's and oneDNN's portable kernels and MKL's compatible
    mode instead of the machine's native ones (AVX2/AVX-512): the release archive has the same sha256."""
    version = yaml.safe_load((clone / "params.yaml").read_text())["release"]["version"]
    archive = clone / "release" / f"mvfer-sim-{version}.tar.gz"
    _run(["dvc", "repro", "release"], clone)
    native = _sha(archive)
    saved = tmp_path / "aligned"
    shutil.move(clone / "data" / "aligned", saved)  # every take is aligned again, on the other code path
    env = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}
    try:
        for cmd in (["align", "run"], ["split"], ["release", "build"]):
            _run_env([sys.executable, "-m", "pipeline", *cmd], clone, env)
        other = _sha(archive)
    finally:
        shutil.rmtree(clone / "data" / "aligned", ignore_errors=True)
        shutil.move(saved, clone / "data" / "aligned")
    _run(["dvc", "repro", "release"], clone)  # leave the clone as dvc.lock says
    assert other == native


def _run_env(args: list[str], cwd: Path, extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MVFER_ROOT"} | extra
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res
