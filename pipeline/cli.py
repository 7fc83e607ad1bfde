"""`mvfer`: one entry point with a subcommand per stage; exit 0 on success, 1 with a one-line reason."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import __version__, paths
from pipeline.errors import PipelineError
from pipeline.params import params

log = logging.getLogger("mvfer")


def _capture_simulate(args: argparse.Namespace) -> int:
    from pipeline.capture.simulate import simulate
    from pipeline.utils import io

    report = simulate(params().capture, Path(args.out) if args.out else paths.RAW)
    io.write_json(Path(args.report) if args.report else paths.CAPTURE_REPORT, report)
    log.info("rendered %d takes (%d frames) in %.1f s: %.1f frames/s, %.1f frames/s per core",
             report["n_takes"], report["n_frames"], report["wall_s"], report["frames_per_s"], report["frames_per_s_per_core"])
    return 0


def _capture_verify(args: argparse.Namespace) -> int:
    from pipeline.capture.verify import verify
    from pipeline.utils import io

    raw = Path(args.raw) if args.raw else paths.RAW
    report = verify(raw, params().capture_verify, params().capture.workers)
    io.write_json(paths.CAPTURE_VERIFY_REPORT, report)
    for mode, figs in report["mode"].items():
        log.info("%-28s detection %.1f %%  NME %s", mode, 100 * figs["detection_rate"], figs["nme_mean"])
    return 0


def _import(args: argparse.Namespace) -> int:
    from pipeline.importers import run_import

    p = params()
    report = run_import(args.layout, Path(args.src), Path(args.out), p.import_, p.rig.expressions)
    sys.stdout.write(f"{report['takes']} takes of {report['subjects']} subjects imported into {args.out}; "
                     f"{report['excluded']} excluded (see {args.out}/import_report.json)\n")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from pipeline.ingest.run import run

    run(params(), raw=Path(args.raw) if args.raw else None)
    return 0


def _align_run(args: argparse.Namespace) -> int:
    from pipeline.align.stage import run

    run(params())
    return 0


def _align_accuracy(args: argparse.Namespace) -> int:
    import pandas as pd

    from pipeline.align.accuracy import accuracy
    from pipeline.utils import io

    truth = Path(args.truth) if args.truth else paths.RAW / paths.TRUTH_SUBDIR
    report = accuracy(pd.read_parquet(paths.MANIFEST), paths.ALIGNED, truth)
    io.write_json(paths.ALIGN_ACCURACY_REPORT, report)
    for mode, figs in report.get("mode", {}).items():
        log.info("%-28s detection %s  NME %s", mode, figs["detection_rate"], figs["nme_mean"])
    return 0


def _media(args: argparse.Namespace) -> int:
    from pipeline.media.stage import run

    report = run(params())
    return 1 if report["failed"] and not report["proxies"] else 0


def _split(args: argparse.Namespace) -> int:
    from pipeline.split.stage import run

    run(params())
    return 0


def _features(args: argparse.Namespace) -> int:
    from pipeline.learn.features import run

    run(params().features)
    return 0


def _train(args: argparse.Namespace) -> int:
    from pipeline.learn.train import run

    run(params().train, params().features)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.learn.evaluate import run

    run(params().train, params().features)
    return 0


def _annotate_simulate(args: argparse.Namespace) -> int:
    from pipeline.qa.simulate import run

    n = run(params())
    log.info("simulated annotators labelled %d tasks -> %s; re-annotation round: %d queued tasks by annotators %s -> %s",
             n["round1_tasks"], paths.ANNOTATIONS_SIM, n["round2_tasks"], ", ".join(n["round2_annotators"]), paths.ANNOTATIONS_SIM_ROUND2)
    return 0


def _build_ext(args: argparse.Namespace) -> int:
    from pipeline.models.mv_scan_native import build

    log.info("compiled MV-LSTM scan ready: %s", build())
    return 0


def _qa(args: argparse.Namespace) -> int:
    from pipeline.qa.stage import run

    run(params(), snapshot=Path(args.snapshot) if args.snapshot else None)
    return 0


def _ls_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else paths.LABEL_STUDIO_HOME / "server"


def _labelstudio(args: argparse.Namespace) -> int:
    from pipeline.annotate import server

    data_dir = _ls_dir(args)
    if args.action == "start":
        info = server.start(data_dir, paths.MEDIA.parent, port=args.port)
        sys.stdout.write(f"Label Studio {info.version} running at {info.url} (pid {info.pid}); "
                         f"the API token is ${server.TOKEN_ENV}; stop with `mvfer labelstudio stop`\n")
        if info.password:  # generated now: shown once, on the terminal only
            sys.stdout.write(f"log in as {os.environ.get(server.USER_ENV, server.DEFAULT_USER)} with the one-time password "
                             f"{info.password} (set ${server.PASSWORD_ENV} to choose one)\n")
    elif args.action == "add-annotator":
        from pipeline.annotate.accounts import add_annotator

        if not args.email:
            raise server.LabelStudioError("usage: mvfer labelstudio add-annotator EMAIL")
        own = server.status(data_dir)  # the password goes into this server's own database
        if own is None or (args.url and args.url.rstrip("/") != own.url):
            raise server.LabelStudioError(f"add-annotator works only on a running server started from {data_dir} "
                                          f"(`mvfer labelstudio start`{'; --url ' + args.url + ' is not it' if args.url else ''})")
        password = add_annotator(_ls_client(args), data_dir / server.DB_NAME, args.email)
        sys.stdout.write(f"{args.email} can log in at {_ls_url(args)}/user/login/ with the one-time password {password}\n")
    elif args.action == "stop":
        sys.stdout.write("stopped\n" if server.stop(data_dir) else "no server was running\n")
    else:
        info = server.status(data_dir)
        sys.stdout.write(f"running at {info.url} (pid {info.pid})\n" if info else "not running\n")
        return 0 if info else 3
    return 0


def _ls_url(args: argparse.Namespace) -> str | None:
    from pipeline.annotate import server

    info = server.status(_ls_dir(args))
    return getattr(args, "url", None) or (info.url if info else None)


def _ls_client(args: argparse.Namespace):
    from pipeline.annotate import server
    from pipeline.annotate.accounts import check_token
    from pipeline.annotate.sync import client

    url = _ls_url(args)
    token = os.environ.get(server.TOKEN_ENV)
    if not url or not token:
        raise server.LabelStudioError(f"need a server (`mvfer labelstudio start` or --url) and ${server.TOKEN_ENV} in the environment")
    ls = client(url, token)
    check_token(ls, url)
    return ls


def _annotate_push(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from pipeline.annotate.guesses import load_guesses
    from pipeline.annotate.sync import PushOptions, load_gold, push, push_reannotation
    from pipeline import vocab
    from pipeline.qa.export import LabelConfig

    a = params().annotate
    opts = PushOptions.from_params(a.model_copy(update={"order": args.order or a.order}))
    ls = _ls_client(args)
    manifest = pd.read_parquet(paths.MANIFEST)
    if args.queue:
        res = push_reannotation(ls, args.project, pd.read_csv(paths.REANNOTATION_QUEUE), manifest, paths.MEDIA, paths.MEDIA.parent, opts)
    else:
        accepted = set(manifest.loc[manifest["status"] == vocab.ACCEPTED, "take_id"])
        guesses = load_guesses(Path(args.guesses), accepted, set(LabelConfig.load(paths.LABEL_CONFIG).expressions)) if args.guesses else None
        gold = load_gold(paths.resolve(a.gold_truth)) if a.gold_truth and a.gold_fraction > 0 else {}
        res = push(ls, args.project, manifest, paths.MEDIA, paths.MEDIA.parent, opts, guesses, gold)
        if guesses is not None:
            res["guesses_skipped"] = dict(guesses.skipped)
    sys.stdout.write(f"push: {json.dumps(res, sort_keys=True)}\n")
    return 0


def _annotate_pull(args: argparse.Namespace) -> int:
    import pandas as pd

    from pipeline import vocab
    from pipeline.annotate.sync import pull, summary_line

    ls = _ls_client(args)  # a refused token is reported before anything else is read
    manifest = pd.read_parquet(paths.MANIFEST)
    accepted = manifest[manifest["status"] == vocab.ACCEPTED]
    s = pull(ls, args.project, set(accepted["take_id"]), n_frames=dict(zip(accepted["take_id"], accepted["n_frames"].astype(int))))
    sys.stdout.write(summary_line(s) + "\n")
    return 0



def _release_build(args: argparse.Namespace) -> int:
    from pipeline.release.stage import run

    run(params(), version=args.version, previous=Path(args.previous) if args.previous else None)
    return 0


def _consent_withdraw(args: argparse.Namespace) -> int:
    from pipeline.privacy.withdraw import withdraw

    rec = withdraw(args.subject, params(), use_label_studio=not args.no_label_studio)
    for line in rec["unreachable"]:
        log.warning("not reached: %s", line)
    sys.stdout.write(f"withdrawn: {rec['takes']} takes removed from the outputs, {rec['releases_amended']} release(s) amended, "
                     f"{rec['dvc_cache_objects_removed']} DVC cache object(s) removed, {rec['models_marked_for_retraining']} "
                     f"model(s) marked for retraining; record appended to {paths.WITHDRAWAL_LOG.name}; now run `dvc repro`\n")
    return 0


def _release_verify(args: argparse.Namespace) -> int:
    from pipeline.release.verify import verify

    res = verify(Path(args.target))
    for kind in ("missing", "extra", "altered"):
        for f in res[kind]:
            log.error("%s: %s", kind, f)
    for msg in res.get("manifest_problems", []):
        log.error("manifest: %s", msg)
    for msg in res.get("problems", []):
        log.error("%s", msg)
    sys.stdout.write(f"{args.target}: {'OK' if res['ok'] else 'FAILED'} ({res['checked']} files checked)\n")
    return 0 if res["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvfer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mvfer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    cap = sub.add_parser("capture", help="the built-in capture simulator")
    cap_sub = cap.add_subparsers(dest="capture_command", required=True)
    sim = cap_sub.add_parser("simulate", help="render the simulated capture into data/raw (params: capture)")
    sim.add_argument("--out", help="write the raw folder here instead of data/raw")
    sim.add_argument("--report", help="write the render figures here instead of reports/capture.json")
    sim.set_defaults(func=_capture_simulate)
    ver = cap_sub.add_parser("verify", help="MTCNN detection rate per pose and illumination (params: capture_verify)")
    ver.add_argument("--raw", help="simulated raw folder (default data/raw)")
    ver.set_defaults(func=_capture_verify)

    imp = sub.add_parser("import", help="a public DFER dataset's tree -> the rig layout ingest reads (params: import)")
    imp.add_argument("layout", help="oulu-casia | ckplus | dfew | ferv39k | mafw | afew | pattern")
    imp.add_argument("src", help="the dataset's folder (read only: nothing is written under it)")
    imp.add_argument("--out", required=True, help="the raw folder to write (then set ingest.raw_dir to it)")
    imp.set_defaults(func=_import)
    ing = sub.add_parser("ingest", help="validate, probe and checksum raw recordings into the manifest (params: ingest)")
    ing.add_argument("--raw", help="raw capture folder (default: ingest.raw_dir in params.yaml)")
    ing.set_defaults(func=_ingest)
    al = sub.add_parser("align", help="face detection, tracking and alignment")
    al_sub = al.add_subparsers(dest="align_command", required=True)
    al_run = al_sub.add_parser("run", help="align every accepted take, incrementally (params: align)")
    al_run.set_defaults(func=_align_run)
    al_acc = al_sub.add_parser("accuracy", help="5-point NME and detection rate against the simulator's truth")
    al_acc.add_argument("--truth", help="ground-truth folder (default data/raw/_truth)")
    al_acc.set_defaults(func=_align_accuracy)

    ann = sub.add_parser("annotate", help="annotation: simulated annotators, Label Studio push and pull")
    ann_sub = ann.add_subparsers(dest="annotate_command", required=True)
    ann_sub.add_parser("simulate", help="write a Label Studio export from simulated annotators (built-in data)").set_defaults(func=_annotate_simulate)
    for name, func, text in (("push", _annotate_push, "create/update the project and import the takes it lacks"),
                             ("pull", _annotate_pull, "export the project into annotations/exports/ and update annotations/snapshot.json")):
        a = ann_sub.add_parser(name, help=text)
        a.add_argument("--project", default="mvfer", help="Label Studio project title (default: mvfer)")
        a.add_argument("--url", help="server URL (default: the one `mvfer labelstudio start` started)")
        a.add_argument("--data-dir", help="server data folder (default .labelstudio/server)")
        if name == "push":
            a.add_argument("--queue", action="store_true", help="push QA's re-annotation queue to the companion project")
            a.add_argument("--guesses", help="the model's per-take predictions, CSV take_id,label,confidence,model_version "
                                             "(e.g. reports/predictions.csv), imported as predictions")
            a.add_argument("--order", choices=["sequential", "uncertainty"], help="serving order (default: annotate.order); "
                                                                                 "uncertainty: least confident guesses first")
        a.set_defaults(func=func)
    con = sub.add_parser("consent", help="the consent ledger (subjects.csv)")
    con_sub = con.add_subparsers(dest="consent_command", required=True)
    cw = con_sub.add_parser("withdraw", help="withdraw a subject: mark the ledger, remove them from every output, "
                                             "release, DVC cache and Label Studio; report what cannot be reached")
    cw.add_argument("subject", help="the pseudonymous subject id, as in subjects.csv")
    cw.add_argument("--no-label-studio", action="store_true", help="do not contact a Label Studio server")
    cw.set_defaults(func=_consent_withdraw)
    rel = sub.add_parser("release", help="versioned dataset releases")
    rel_sub = rel.add_subparsers(dest="release_command", required=True)
    rb = rel_sub.add_parser("build", help="build release/<name>-<version>/ and its archive (params: release)")
    rb.add_argument("--version", help="X.Y.Z (default: release.version in params.yaml)")
    rb.add_argument("--previous", help="folder of the previous release, for the CHANGELOG (default: release.previous)")
    rb.set_defaults(func=_release_build)
    rv = rel_sub.add_parser("verify", help="check every checksum of a release folder or archive")
    rv.add_argument("target")
    rv.set_defaults(func=_release_verify)
    lsp = sub.add_parser("labelstudio", help="a local Label Studio server on 127.0.0.1 (token from $LABEL_STUDIO_API_KEY)")
    lsp.add_argument("action", choices=["start", "stop", "status", "add-annotator"])
    lsp.add_argument("email", nargs="?", help="add-annotator: the annotator's e-mail (prints a one-time password)")
    lsp.add_argument("--url", help="server URL (default: the one `mvfer labelstudio start` started)")
    lsp.add_argument("--port", type=int, help="loopback port (default: a free one)")
    lsp.add_argument("--data-dir", help="server data folder (default .labelstudio/server)")
    lsp.set_defaults(func=_labelstudio)
    qa = sub.add_parser("qa", help="agreement, aggregation, annotator quality, re-annotation queue (params: qa)")
    qa.add_argument("--snapshot", help="export to read instead of qa.snapshot")
    qa.set_defaults(func=_qa)

    for name, func, text in (
        ("media", _media, "browser-playable H.264 proxies of accepted takes into data/media, incrementally (params: media)"),
        ("split", _split, "subject-independent and unseen-mode split protocols with leakage checks (params: split)"),
        ("features", _features, "train the per-frame CNN on training subjects and encode every frame (params: features)"),
        ("train", _train, "train every model variant x seed x fold (params: train)"),
        ("evaluate", _evaluate, "seen vs unseen accuracy and macro-F1, per mode, plots (params: train)"),
        ("build-ext", _build_ext, "compile the MV-LSTM scan (C++, ~35 s once; `make install` does it) or say why it cannot"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.utils.log import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (PipelineError, FileNotFoundError) as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
