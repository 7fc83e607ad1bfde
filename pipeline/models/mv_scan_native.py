"""Build and load the compiled MV-LSTM scan (csrc/mv_scan.cpp), or say why not and let the Python scan run.

Why compiled: the Python scan pays ~8 dispatched tensor ops per step forward and ~6 backward, which at
our sizes made the MV-LSTM 3-4x slower than torch.nn.LSTM. The C++ loop does one GEMM plus fused
element-wise work per step.

`MVFER_MV_SCAN` picks the implementation: `auto` (default: compiled if it builds, else the Python scan
with one warning), `native` (compiled or an error) or `python`. The build (about 35 s on 2 cores; `make
install` does it once) goes to `ext_build_dir()`, named by a hash of the source and the torch and Python
versions; a file lock serialises concurrent builds (parallel workers) and is released if a builder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

from pipeline.errors import PipelineError
from pipeline.layout import ext_build_dir
from pipeline.utils import io

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "mv_scan.cpp"
CHOICES = ("auto", "native", "python")
LOCK_WAIT_S = 600.0  # a build takes ~35 s; a lock held for longer is a hung builder, not a slow one


class NativeScanUnavailable(PipelineError, RuntimeError):
    """The compiled scan was asked for (MVFER_MV_SCAN=native or `mvfer build-ext`) and cannot be built or loaded,
    or MVFER_MV_SCAN holds an unknown value."""


def choice() -> str:
    """The implementation asked for by MVFER_MV_SCAN (default `auto`); an unknown value is an error."""
    value = os.environ.get("MVFER_MV_SCAN", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise NativeScanUnavailable(f"MVFER_MV_SCAN={value!r}: expected one of {', '.join(CHOICES)}")
    return value


CFLAGS = ["-O3", "-fopenmp"]  # OpenMP: at::parallel_for splits the batch rows (torch's own libgomp is used)


def module_name(source: bytes) -> str:
    """One build per source text, flags, torch version and Python version (never a stale build)."""
    key = hashlib.sha256(
        source + " ".join(CFLAGS).encode() + torch.__version__.encode() + sys.version.encode()
    ).hexdigest()[:12]
    return f"mvfer_mv_scan_{key}"


def _toolchain_problem() -> str | None:
    """Why a build cannot start here, in one line, or None."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which((compiler.split() or ["c++"])[0]) is None:  # CXX may carry a wrapper: "ccache g++"
        return f"no C++ compiler ({compiler!r} not on PATH; Debian: apt-get install g++)"
    if shutil.which("ninja") is None:
        return "ninja not on PATH (pip install ninja)"
    return None


def _build(build_dir: Path) -> ModuleType:
    from torch.utils.cpp_extension import load

    source = SOURCE.read_bytes()
    name = module_name(source)
    build_dir = build_dir / name
    build_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(build_dir.parent / f"{name}.lock", "w") as lock:
        _lock(lock, build_dir)  # released by the kernel if this process dies
        stale = build_dir / "lock"  # torch's own baton: only a dead builder can have left it while we hold ours
        stale.unlink(missing_ok=True)
        if not (build_dir / f"{name}.so").exists():
            log.info("building the compiled MV-LSTM scan into %s (once per source, about 35 s)", build_dir)
        # Built from a copy beside the build: ninja rebuilds when a source's *path* changes, and every checkout
        # (a DVC experiment's temporary copy, a test's clone) would otherwise rebuild the one shared module.
        # The name already hashes the text, so an existing copy is this text; never rewritten (its mtime stays).
        copy = build_dir / SOURCE.name
        if not copy.exists():
            io.write_bytes(copy, source)
        return load(
            name=name,
            sources=[str(copy)],
            build_directory=str(build_dir),
            extra_cflags=CFLAGS,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )


def _lock(lock, build_dir: Path, wait_s: float = LOCK_WAIT_S) -> None:
    """Take the build lock; say so when another process holds it, and give up (an error) after `wait_s`."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not said:
                log.info("waiting for another process building the compiled MV-LSTM scan in %s", build_dir)
                said = True
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"another process held the build lock of {build_dir} for over {wait_s:.0f} s"
                ) from None
            time.sleep(0.5)


def _reason(exc: Exception) -> str:
    """The compiler's first error line from a failed build (torch's own last line only says ninja stopped)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln or "Error:" in ln]
    return (errors or lines or [type(exc).__name__])[0][:300]


def native() -> ModuleType | None:
    """The compiled scan as MVFER_MV_SCAN asks for it: built if needed; None (after one warning) when it
    cannot be had and `auto` allows the Python scan."""
    wanted = choice()
    if wanted == "python":
        return None
    module, problem = _attempt()
    if module is None and wanted == "native":
        raise NativeScanUnavailable(f"MVFER_MV_SCAN=native but the compiled MV-LSTM scan is unavailable: {problem}")
    if module is None:
        _warn_once(problem)
    return module


def build() -> Path:
    """Build now (`mvfer build-ext`; `make install` runs it): the compiled module's file, or an error saying why not."""
    module, problem = _attempt()
    if module is None:
        raise NativeScanUnavailable(f"the compiled MV-LSTM scan is unavailable: {problem}")
    return Path(str(module.__file__))


def reset() -> None:
    """Forget what was loaded, why it failed and what ran (tests and the benchmark switch implementations)."""
    _attempt.cache_clear()
    _warn_once.cache_clear()
    _used.clear()


# What the scan's dispatch (pipeline/models/mv_scan.py) ran in this process: `native`, or `python (why)`.
# Recorded, not predicted: the numbers of a stage depend on it, so its report says it (`implementation`).
_used: set[str] = set()


def record(kind: str) -> None:
    """Called by the dispatch each time it runs a scan."""
    _used.add(kind)


def fallback_reason() -> str:
    """Why the dispatch would run the Python scan on CPU tensors (after `native()` returned None)."""
    if choice() == "python":
        return "MVFER_MV_SCAN=python"
    problem = _attempt()[1]
    return f"compiled scan unavailable: {problem}"


def used() -> frozenset[str]:
    """The implementations the dispatch ran in this process (workers report theirs to their stage)."""
    return frozenset(_used)


def describe(kinds: frozenset[str] | set[str]) -> str:
    """One line for a report: `native`, `python (why)`, both joined, or that no MV-LSTM scan ran."""
    if not kinds:
        return f"none ran (MVFER_MV_SCAN={os.environ.get('MVFER_MV_SCAN', 'auto')})"
    return "; ".join(sorted(kinds))


def implementation() -> str:
    """The MV-LSTM scan this process ran ("native", or "python (why)"): recorded in the stage reports."""
    return describe(_used)


@contextlib.contextmanager
def _venv_on_path() -> Iterator[None]:
    """The venv's bin (its ninja) on PATH while building, when the venv is not activated; PATH restored after."""
    saved = os.environ.get("PATH", "")
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in saved.split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + saved
    try:
        yield
    finally:
        os.environ["PATH"] = saved


@functools.cache
def _attempt() -> tuple[ModuleType | None, str | None]:
    """Build or load once per process: the module, or None and why not (callers decide to refuse or fall back)."""
    with _venv_on_path():
        problem = _toolchain_problem()
        if problem is None:
            try:
                return _build(ext_build_dir()), None
            except Exception as exc:  # noqa: BLE001 - a compiler's failure has many types; it is reported, not hidden
                problem = f"build failed in {ext_build_dir()}: {_reason(exc)}"
    return None, problem


@functools.cache
def _warn_once(problem: str) -> None:
    log.warning("compiled MV-LSTM scan unavailable (%s); using the Python scan, 2-3x slower", problem)
