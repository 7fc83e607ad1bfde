"""What an aligned output depends on besides its take and the parameters: code, weights, libraries.

Computed at run time, never hand-bumped: the sha256 of the source of every `pipeline` module in the
import closure of the per-take code and of the chosen detector, the sha256 of the resolved model
weights (MTCNN .pt files or the insightface detector .onnx, wherever an environment variable
points), and the versions of the numeric libraries. It goes into every take's cache key, so a code
or weights change reprocesses every take while an unrelated edit (the report, the CLI) does not.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

ROOT_MODULES = ("pipeline.align.process",)
# Environment variables that choose what runs: their values and what they resolve to are keyed.
KEYED_ENV = ("MVFER_MTCNN_WEIGHTS", "MVFER_INSIGHTFACE_PACK")
# Logged and reported, not keyed: the executor's address and the CPU code path do not change the
# bytes (tests/align/test_stage.py::test_dask_local_cluster_gives_identical_outputs,
# tests/align/test_determinism.py).
LOGGED_ENV = ("MVFER_DASK_SCHEDULER", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS")


_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the `pipeline` package


def _module_file(name: str, package_dir: Path = _PACKAGE_DIR) -> Path | None:
    """The source file of a `pipeline` module under `package_dir`, found on disk without importing it."""
    base = package_dir.joinpath(*name.split(".")[1:])
    for cand in (base / "__init__.py", base.with_suffix(".py")):
        if cand.is_file():
            return cand
    return None


def _imports(name: str, path: Path) -> set[str]:
    """`pipeline.*` modules imported at module level by one source file (function-level imports
    are lazy registry entries: the chosen detector is added explicitly)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "pipeline" or m.startswith("pipeline.")}


def module_closure(roots: tuple[str, ...], package_dir: Path = _PACKAGE_DIR) -> dict[str, Path]:
    """Every `pipeline` module the roots import at module level, transitively (with their packages)."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, package_dir)
        if path is None:  # a name imported from a module (a function or class), not a module
            continue
        seen[name] = path
        parents = [name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)]
        todo += [m for m in (*_imports(name, path), *parents) if m not in seen]
    return dict(sorted(seen.items()))


def _sha256(path: Path) -> str:
    from pipeline.utils.io import sha256_file

    return sha256_file(path)


def weights_files(detector: str, pack: str) -> list[Path]:
    """The model files the detector will load, resolved as it resolves them."""
    if detector == "insightface":
        from pipeline.align.detectors.insightface import find_detector_file

        return [find_detector_file(pack)]
    from pipeline.align.detectors.mtcnn import _WEIGHT_FILES, find_weights_dir

    wdir = find_weights_dir()
    return [wdir / f for f in _WEIGHT_FILES]


def library_versions(detector: str) -> dict[str, str]:
    import zlib

    import cv2
    import numpy as np
    import torch

    v = {
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "torch": torch.__version__,
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
    }
    if detector == "insightface":
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    return v


@lru_cache(maxsize=8)
def _code(detector: str, package_dir: Path) -> tuple[str, tuple[str, ...]]:
    files = module_closure((*ROOT_MODULES, f"pipeline.align.detectors.{detector}"), package_dir)
    h = hashlib.sha256()
    for name, path in files.items():
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest(), tuple(files)


def provenance(detector: str, pack: str, package_dir: Path = _PACKAGE_DIR) -> dict:
    """Everything besides take and parameters that an output depends on (logged, and keyed).

    `package_dir` is the `pipeline` package whose source is hashed (this one; a test hashes an edited copy).
    """
    code, modules = _code(detector, Path(package_dir))
    weights = {str(p): _sha256(p) for p in weights_files(detector, pack)}
    return {
        "code_sha256": code,
        "modules": list(modules),
        "weights_sha256": sorted(weights.values()),
        "weights_files": sorted(weights),
        "libraries": library_versions(detector),
        "env": {k: os.environ[k] for k in KEYED_ENV if k in os.environ},
        "env_not_keyed": {k: os.environ[k] for k in LOGGED_ENV if k in os.environ},
    }


def provenance_key(prov: dict) -> str:
    """The part of the provenance that changes outputs, as one hash (paths and logged-only env left out)."""
    keyed = {k: prov[k] for k in ("code_sha256", "weights_sha256", "libraries", "env")}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
