"""The stage contract: how a stage's thin shell is run, fails, and records what ran it.

A stage is a pure core (data in, data out) and a shell `run(layout, params, **options)` that reads
its declared inputs through the `Layout`, calls the core and writes its declared outputs atomically.
A shell module ends with

    if __name__ == "__main__":
        raise SystemExit(main(run))

so `dvc.yaml` runs `python -m <module>` and the stage depends on that module's imports only, never on
the CLI or on other stages. `main` (and the CLI, through `invoke`) turns a `PipelineError` into one
line and exit 1, an `EnvironmentFault` (disk full, memory, a lost cluster) into one line and exit 2:
DVC then records nothing as done.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import EnvironmentFault, PipelineError, environment_fault, is_environment_fault
from pipeline.layout import Layout
from pipeline.params import Params, load_params
from pipeline.utils.machine import machine

log = logging.getLogger("mvfer")

Shell = Callable[..., Any]
EXIT_INPUT, EXIT_ENVIRONMENT = 1, 2

CODE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding the `pipeline` package

_current: ContextVar[tuple[str, Layout] | None] = ContextVar("mvfer_stage", default=None)


def _module_name(fn: Shell) -> str:
    mod = fn.__module__
    if mod == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        mod = spec.name if spec is not None else mod
    return mod


def invoke(run: Shell, layout: Layout, params: Params, **options: Any) -> int:
    """Run a shell; 0 on success (or its own int), 1 for bad input, 2 for a fault of the machine."""
    token = _current.set((_module_name(run), layout))
    try:
        result = run(layout, params, **options)
        return result if isinstance(result, int) else 0
    except EnvironmentFault as e:
        log.error("environment: %s", e)
        return EXIT_ENVIRONMENT
    except (PipelineError, FileNotFoundError) as e:
        log.error("%s", e)
        return EXIT_INPUT
    except (OSError, MemoryError) as e:
        if is_environment_fault(e):
            log.error("environment: %s", environment_fault(e, "stage stopped"))
            return EXIT_ENVIRONMENT
        # any other file-system refusal (permission, a missing folder): one line naming the file, never a traceback
        where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
        log.error("%s%s", e.strerror if isinstance(e, OSError) and e.strerror else e, where)
        return EXIT_INPUT
    finally:
        _current.reset(token)


def main(run: Shell) -> int:
    """Entry point of `python -m <shell module>` (what dvc.yaml runs): the layout from the working folder,
    params.yaml, logging. It takes no arguments: a stage's options go through `mvfer <command>`, so that a
    mistyped option never runs the stage on its default outputs."""
    from pipeline.utils.log import setup_logging

    setup_logging(bool(os.environ.get("MVFER_VERBOSE")))
    module = _module_name(run)
    if sys.argv[1:]:
        wants_help = sys.argv[1] in ("-h", "--help")
        (log.info if wants_help else log.error)(
            "python -m %s runs the stage as dvc.yaml declares it and takes no arguments (got %s); "
            "options: `mvfer --help`",
            module,
            " ".join(sys.argv[1:]),
        )
        return 0 if wants_help else EXIT_INPUT
    layout = Layout.discover()
    try:
        params = load_params(layout.params_file)
    except PipelineError as e:
        log.error("%s", e)
        return EXIT_INPUT
    return invoke(run, layout, params)


def _torch_info() -> dict[str, Any]:
    """Only when the stage imported torch: the numbers depend on its build, threads and kernels."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "onednn": bool(torch.backends.mkldnn.is_available()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": bool(torch.cuda.is_available()),
    }
    scan = sys.modules.get("pipeline.models.mv_scan_native")
    if scan is not None:
        info["mv_scan"] = (
            scan.implementation() if hasattr(scan, "implementation") else os.environ.get("MVFER_MV_SCAN", "auto")
        )
    return info


def provenance(params: Params | None = None, *sections: str, **extra: Any) -> dict[str, Any]:
    """The uniform block every report carries: code version, parameters, libraries, threads, machine.

    `sections` are dotted params keys (`align`, `ingest.raw_dir`); no clock time, so a rerun on the
    same machine and code writes the same block.
    """
    from pipeline.deps import code_digest

    current = _current.get()
    block: dict[str, Any] = {
        "mvfer": __version__,
        "python": platform.python_version(),
        "machine": machine(),
    }
    if current is not None:
        module, _ = current
        block["stage_module"] = module
        try:  # the code that ran: where this package is, whichever project folder it ran on
            block["code_sha256"] = code_digest(CODE_ROOT, module)
        except OSError:
            block["code_sha256"] = None
    if params is not None and sections:
        dumped = params.model_dump(by_alias=True, mode="json")
        chosen: dict[str, Any] = {}
        for key in sections:
            node: Any = dumped
            for part in key.split("."):
                node = node[part]
            chosen[key] = node
        block["params"] = chosen
    block.update(_torch_info())
    block.update(extra)
    return block


def with_provenance(
    report: dict[str, Any], params: Params | None = None, *sections: str, **extra: Any
) -> dict[str, Any]:
    """`report` with its `provenance` block added (a new dict)."""
    return {**report, "provenance": provenance(params, *sections, **extra)}
