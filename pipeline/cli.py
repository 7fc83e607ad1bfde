"""`mvfer`: one entry point; a subcommand per stage (from the stage registry) plus the tools around them.

Exit 0 on success, 1 with a one-line reason for bad input, 2 for a fault of the machine (disk full,
memory, a lost cluster). No stage imports this module: `dvc.yaml` runs `python -m <stage module>`,
so editing a help text here reruns nothing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import __version__
from pipeline.errors import EnvironmentFault, PipelineError
from pipeline.layout import Layout
from pipeline.stages import STAGES, Stage

log = logging.getLogger("mvfer")

Handler = Callable[[argparse.Namespace], int]
MAX_LISTED = 20  # excluded files listed on the console (all of them in the import report)


def _stage_handler(stage: Stage) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        from pipeline.params import load_params
        from pipeline.stage import invoke

        layout = Layout.discover()
        run = importlib.import_module(stage.module).run
        options = {o.name: getattr(args, o.name) for o in stage.options}
        return invoke(run, layout, load_params(layout.params_file), **options)

    return handler


def _import(args: argparse.Namespace) -> int:
    from pipeline.importers import run_import
    from pipeline.params import load_params

    p = load_params(Layout.discover().params_file)
    report = run_import(args.layout, Path(args.src), Path(args.out), p.import_, p.rig.expressions)
    sys.stdout.write(
        f"{report['takes']} takes of {report['subjects']} subjects imported into {args.out}; "
        f"{report['excluded']} excluded (see {args.out}/import_report.json)\n"
    )
    for item in report["excluded_items"][:MAX_LISTED]:
        sys.stdout.write(f"  - {item['reason_code']}: {item['reason']}\n")
    if report["excluded"] > MAX_LISTED:
        sys.stdout.write(f"  ... and {report['excluded'] - MAX_LISTED} more in {args.out}/import_report.json\n")
    return 0


def _init_recordings(args: argparse.Namespace) -> int:
    from pipeline.importers.project import init_recordings, summary

    layout = Layout.discover()
    result = init_recordings(
        layout, Path(args.dir), raw_dir=args.out, name=args.name, licence=args.licence, creator=args.creator
    )
    sys.stdout.write(summary(result, layout.root))
    return 0


def _consent_withdraw(args: argparse.Namespace) -> int:
    from pipeline.params import load_params
    from pipeline.privacy.withdraw import withdraw_command
    from pipeline.stage import invoke

    layout = Layout.discover()
    return invoke(
        withdraw_command,
        layout,
        load_params(layout.params_file),
        subject=args.subject,
        use_label_studio=not args.no_label_studio,
    )


def _release_verify(args: argparse.Namespace) -> int:
    from pipeline.release.verify import verify_command

    return verify_command(Path(args.target))


def _build_ext(args: argparse.Namespace) -> int:
    from pipeline.models.mv_scan_native import build

    log.info("compiled MV-LSTM scan ready: %s", build())
    return 0


def _dvc_yaml(args: argparse.Namespace) -> int:
    from pipeline.dvcyaml import drift, render
    from pipeline.stage import CODE_ROOT
    from pipeline.utils import io

    layout = Layout.discover()
    if layout.root != CODE_ROOT:  # dvc.yaml lists code deps relative to the checkout that holds the code
        log.error("dvc-yaml works in the checkout that holds the pipeline code (%s), not %s", CODE_ROOT, layout.root)
        return 1
    if args.write:
        io.write_text(layout.root / "dvc.yaml", render(layout.root))
        sys.stdout.write(f"wrote {layout.root / 'dvc.yaml'} ({len(STAGES)} stages)\n")
        return 0
    diff = drift(layout.root)
    if args.check:
        if diff:
            sys.stdout.write("\n".join(diff[:200]) + "\n")
            log.error("dvc.yaml is not what pipeline/stages.py generates: run `mvfer dvc-yaml --write`")
            return 1
        sys.stdout.write("dvc.yaml is in step with pipeline/stages.py\n")
        return 0
    sys.stdout.write(render(layout.root))
    return 0


def _subcommands(parser: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:
    """The parser's subcommand action, created on first use (a group such as `align` holds several)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=dest, required=True)


def _add_stage(sub: argparse._SubParsersAction, stage: Stage) -> None:
    *groups, word = stage.cli
    action = sub
    for g in groups:
        parent = action.choices.get(g) or action.add_parser(g, help=f"{g} commands")
        action = _subcommands(parent, f"{g}_command")
    p = action.add_parser(word, help=f"{stage.help or stage.desc} [stage {stage.name}]")
    for o in stage.options:
        p.add_argument(o.flag, dest=o.name, help=o.help)
    p.set_defaults(func=_stage_handler(stage))


def build_parser() -> argparse.ArgumentParser:
    from pipeline.annotate.commands import add_commands as add_annotation_commands
    from pipeline.importers import IMPORTERS

    parser = argparse.ArgumentParser(prog="mvfer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mvfer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    add_annotation_commands(sub)  # labelstudio start|stop|status|add-annotator, annotate push|pull
    for stage in STAGES:
        _add_stage(sub, stage)

    imp = sub.add_parser("import", help="a public DFER dataset's tree -> the rig layout ingest reads (params: import)")
    imp.add_argument("layout", choices=IMPORTERS.names(), help="the dataset's layout")
    imp.add_argument("src", help="the dataset's folder (read only: nothing is written under it)")
    imp.add_argument("--out", required=True, help="the raw folder to write (then set ingest.raw_dir to it)")
    imp.set_defaults(func=_import)

    ini = sub.add_parser("init", help="set this project up for a data source")
    rec = _subcommands(ini, "init_command").add_parser(
        "recordings",
        help="a lab's folder of videos as the data source: probe it, propose the template and labels, write params, "
        "import (consent sheet skeleton), dvc.yaml without the simulator; prints what is left to fill in",
    )
    rec.add_argument("dir", help="the lab's folder of recordings (read only: nothing is written under it)")
    rec.add_argument("--out", default="data/recordings", help="the imported folder ingest reads (ingest.raw_dir)")
    rec.add_argument("--name", help="the release's name (release.name; default: the folder's name)")
    rec.add_argument(
        "--licence", default="CC-BY-NC-4.0", choices=["CC-BY-NC-4.0", "CC-BY-4.0"], help="the release's licence"
    )
    rec.add_argument("--creator", help="who made the recordings (release.creator)")
    rec.set_defaults(func=_init_recordings)

    con = sub.add_parser("consent", help="the consent ledger (subjects.csv)")
    cw = _subcommands(con, "consent_command").add_parser(
        "withdraw",
        help="withdraw a subject: mark the ledger, remove them from every output, release, DVC cache and "
        "Label Studio; report what cannot be reached",
    )
    cw.add_argument("subject", help="the pseudonymous subject id, as in subjects.csv")
    cw.add_argument("--no-label-studio", action="store_true", help="do not contact a Label Studio server")
    cw.set_defaults(func=_consent_withdraw)

    rv = _subcommands(sub.choices["release"], "release_command").add_parser(
        "verify", help="check every checksum and member of a release folder or archive"
    )
    rv.add_argument("target")
    rv.set_defaults(func=_release_verify)

    sub.add_parser(
        "build-ext", help="compile the MV-LSTM scan (C++, ~35 s once; `make install` does it) or say why it cannot"
    ).set_defaults(func=_build_ext)
    dy = sub.add_parser("dvc-yaml", help="print dvc.yaml as generated from pipeline/stages.py")
    mode = dy.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write it to dvc.yaml")
    mode.add_argument("--check", action="store_true", help="exit 1 with the diff when dvc.yaml differs")
    dy.set_defaults(func=_dvc_yaml)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.utils.log import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    func: Handler = args.func
    try:
        return func(args)
    except EnvironmentFault as e:
        log.error("environment: %s", e)
        return 2
    except (PipelineError, FileNotFoundError) as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
