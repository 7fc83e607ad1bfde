"""`mvfer labelstudio start|stop|status|add-annotator` and `mvfer annotate push|pull`.

The command line of the annotation tooling; cli.py only calls `add_commands`. Every handler builds
the project's `Layout` itself and prints one line (or raises a PipelineError, which the CLI turns
into one line and exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline.layout import Layout


def _ls_dir(args: argparse.Namespace, layout: Layout) -> Path:
    return Path(args.data_dir) if getattr(args, "data_dir", None) else layout.label_studio_home / "server"


def _ls_url(args: argparse.Namespace, layout: Layout) -> str | None:
    from pipeline.annotate import server

    info = server.status(_ls_dir(args, layout))
    return getattr(args, "url", None) or (info.url if info else None)


def _ls_client(args: argparse.Namespace, layout: Layout):
    from pipeline.annotate import server
    from pipeline.annotate.accounts import check_token
    from pipeline.annotate.sync import client

    url = _ls_url(args, layout)
    token = os.environ.get(server.TOKEN_ENV)
    if not url or not token:
        raise server.LabelStudioError(
            f"need a server (`mvfer labelstudio start` or --url) and ${server.TOKEN_ENV} in the environment"
        )
    ls = client(url, token)
    check_token(ls, url)
    return ls, url


def _labelstudio(args: argparse.Namespace) -> int:
    from pipeline.annotate import server

    layout = Layout.discover()
    data_dir = _ls_dir(args, layout)
    if args.action == "start":
        info = server.start(data_dir, layout.media.parent, port=args.port)
        sys.stdout.write(
            f"Label Studio {info.version} running at {info.url} (pid {info.pid}); "
            f"the API token is ${server.TOKEN_ENV}; stop with `mvfer labelstudio stop`\n"
        )
        if info.password:  # generated now: shown once, on the terminal only
            sys.stdout.write(
                f"log in as {os.environ.get(server.USER_ENV, server.DEFAULT_USER)} with the one-time password "
                f"{info.password} (set ${server.PASSWORD_ENV} to choose one)\n"
            )
    elif args.action == "add-annotator":
        from pipeline.annotate.accounts import add_annotator

        if not args.email:
            raise server.LabelStudioError("usage: mvfer labelstudio add-annotator EMAIL")
        own = server.status(data_dir)  # the password goes into this server's own database
        if own is None or (args.url and args.url.rstrip("/") != own.url):
            raise server.LabelStudioError(
                f"add-annotator works only on a running server started from {data_dir} "
                f"(`mvfer labelstudio start`{'; --url ' + args.url + ' is not it' if args.url else ''})"
            )
        ls, url = _ls_client(args, layout)
        password = add_annotator(ls, data_dir / server.DB_NAME, args.email)
        sys.stdout.write(
            f"{args.email} can log in at {url}/user/login/ with the one-time password {password} "
            "(their own workspace: they see only their own tasks; push again to give them theirs)\n"
        )
    elif args.action == "stop":
        sys.stdout.write("stopped\n" if server.stop(data_dir) else "no server was running\n")
    else:
        running = server.status(data_dir)
        sys.stdout.write(f"running at {running.url} (pid {running.pid})\n" if running else "not running\n")
        return 0 if running else 3
    return 0


def _annotate_push(args: argparse.Namespace) -> int:
    import pandas as pd

    from pipeline import vocab
    from pipeline.annotate import server
    from pipeline.annotate.export import LabelConfig
    from pipeline.annotate.guesses import load_guesses
    from pipeline.annotate.sync import PushOptions, push, push_reannotation
    from pipeline.params import load_params

    layout = Layout.discover()
    a = load_params(layout.params_file).annotate
    opts = PushOptions.from_params(a.model_copy(update={"order": args.order or a.order}))
    ls, _ = _ls_client(args, layout)
    db = _ls_dir(args, layout) / server.DB_NAME
    manifest = pd.read_parquet(layout.manifest)
    config = layout.label_config.read_text()
    guide = layout.root / "docs" / "annotator-guide.md"
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    from pipeline.annotate.sync import PushError

    try:  # push is idempotent: what was imported before a failure stays, and a second push adds the rest
        if args.queue:
            from pipeline.annotate.export import load_export
            from pipeline.annotate.sync import answered_by

            snapshot = layout.annotation_snapshot
            answered = answered_by(load_export(snapshot)) if snapshot.is_file() else {}
            res = push_reannotation(
                ls,
                db,
                args.project,
                pd.read_csv(layout.reannotation_queue),
                manifest,
                layout.media,
                layout.media.parent,
                config,
                opts,
                guide=guide,
                answered=answered,
            )
        else:
            accepted = set(manifest.loc[manifest["status"] == vocab.ACCEPTED, "take_id"])
            guesses = (
                load_guesses(Path(args.guesses), accepted, set(LabelConfig.load(layout.label_config).expressions))
                if args.guesses
                else None
            )
            res = push(
                ls, db, args.project, manifest, layout.media, layout.media.parent, config, opts, guesses, guide=guide
            )
            if guesses is not None:
                res["guesses_skipped"] = dict(guesses.skipped)
    except (httpx.HTTPError, ApiError) as e:
        reason = (str(e).strip().splitlines() or [""])[0] or type(e).__name__
        raise PushError(
            f"push stopped: Label Studio refused or stopped answering ({type(e).__name__}: {reason[:160]}); what was "
            "imported stays; check `mvfer labelstudio status`, start it again and push again (push is idempotent)"
        ) from None
    sys.stdout.write(f"push: {json.dumps(res, sort_keys=True)}\n")
    return 0


def _annotate_pull(args: argparse.Namespace) -> int:
    import pandas as pd

    from pipeline import vocab
    from pipeline.annotate import server
    from pipeline.annotate.export import LabelConfig
    from pipeline.annotate.sync import load_gold, pull, summary_line
    from pipeline.params import load_params

    layout = Layout.discover()
    a = load_params(layout.params_file).annotate
    ls, url = _ls_client(args, layout)  # a refused token is reported before anything else is read
    manifest = pd.read_parquet(layout.manifest)
    accepted = manifest[manifest["status"] == vocab.ACCEPTED]
    gold_path = layout.resolve(a.gold_truth) if a.gold_truth and a.gold_fraction > 0 else None
    s = pull(
        ls,
        _ls_dir(args, layout) / server.DB_NAME,
        args.project,
        set(accepted["take_id"]),
        LabelConfig.load(layout.label_config),
        exports_dir=layout.annotation_exports,
        snapshot=layout.annotation_snapshot,
        n_frames=dict(zip(accepted["take_id"], accepted["n_frames"].astype(int))),
        gold=load_gold(gold_path),
        gold_fraction=a.gold_fraction,
        seed=a.seed,
        gold_source=a.gold_truth,
        url=url,
    )
    sys.stdout.write(summary_line(s) + "\n")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add `labelstudio` and `annotate` (push, pull) to the CLI; `annotate simulate` comes from the stage registry."""
    lsp = sub.add_parser(
        "labelstudio", help="a local Label Studio server on 127.0.0.1 (token from $LABEL_STUDIO_API_KEY)"
    )
    lsp.add_argument("action", choices=["start", "stop", "status", "add-annotator"])
    lsp.add_argument("email", nargs="?", help="add-annotator: the annotator's e-mail (prints a one-time password)")
    lsp.add_argument("--url", help="server URL (default: the one `mvfer labelstudio start` started)")
    lsp.add_argument("--port", type=int, help="loopback port (default: a free one)")
    lsp.add_argument("--data-dir", help="server data folder (default .labelstudio/server)")
    lsp.set_defaults(func=_labelstudio)

    ann = sub.choices.get("annotate") or sub.add_parser(
        "annotate", help="annotation: simulated annotators, Label Studio push and pull"
    )
    ann_sub = next((a for a in ann._actions if isinstance(a, argparse._SubParsersAction)), None) or ann.add_subparsers(
        dest="annotate_command", required=True
    )
    for name, func, text in (
        (
            "push",
            _annotate_push,
            "give every annotator account their tasks (one workspace each) and import what is missing",
        ),
        (
            "pull",
            _annotate_pull,
            "export every annotator's project into annotations/exports/ and update annotations/snapshot.json",
        ),
    ):
        a = ann_sub.add_parser(name, help=text)
        a.add_argument("--project", default="mvfer", help="Label Studio project title (default: mvfer)")
        a.add_argument("--url", help="server URL (default: the one `mvfer labelstudio start` started)")
        a.add_argument("--data-dir", help="server data folder (default .labelstudio/server)")
        if name == "push":
            a.add_argument(
                "--queue", action="store_true", help="push QA's re-annotation queue to the companion project"
            )
            a.add_argument(
                "--guesses",
                help="the model's per-take predictions, CSV take_id,label,confidence,model_version "
                "(e.g. reports/predictions.csv), imported as predictions",
            )
            a.add_argument(
                "--order",
                choices=["sequential", "uncertainty"],
                help="serving order (default: annotate.order); uncertainty: least confident guesses first",
            )
        a.set_defaults(func=func)
