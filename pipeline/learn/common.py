"""Shared helpers of the learning stages: device, seeding, split files, feature files.

Readers raise a one-line `PipelineError` naming the file (and field) for a missing or damaged input,
and let a fault of the machine (memory, an unreadable disk) through as one (see pipeline/errors.py).
"""

from __future__ import annotations

import json
import os
import random
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch

from pipeline.errors import PipelineError, environment_fault, is_environment_fault

T = TypeVar("T")


class LearnInputError(PipelineError, ValueError):
    """A split, feature or checkpoint file that is missing or damaged: rerun the stage that writes it."""


class LearnConfigError(PipelineError, ValueError):
    """A setting of the learning stages that cannot run here (one line, naming it)."""


DEVICE_ENV = "MVFER_DEVICE"


def device() -> torch.device:
    """Where the frame CNNs and the sequence models run: CUDA when present, else CPU (tests and CI run on CPU).

    The one place that chooses; `$MVFER_DEVICE=cpu` keeps a GPU machine on the CPU (e.g. to compare results),
    `cuda` refuses in one line where there is none, `auto` (or unset) chooses."""
    want = os.environ.get(DEVICE_ENV, "auto").strip().lower() or "auto"
    if want not in ("auto", "cpu", "cuda"):
        raise LearnConfigError(f"${DEVICE_ENV}={want!r}: expected auto, cpu or cuda")
    if want == "cuda" and not torch.cuda.is_available():
        raise LearnConfigError(f"${DEVICE_ENV}=cuda but torch sees no CUDA device (torch {torch.__version__})")
    if want == "cpu":
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a generator for data order."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def missing_field(e: KeyError) -> str:
    """The key of a KeyError (np.load's says "<name> is not a file in the archive")."""
    return str(e.args[0]).split(" is not a file in the archive")[0] if e.args else "?"


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Turn a failure to read `path` into a one-line input error (machine faults stay machine faults)."""
    try:
        yield
    except PipelineError:
        raise
    except KeyError as e:
        raise LearnInputError(f"{path}: {what} has no field {missing_field(e)!r}") from e
    except Exception as e:
        if is_environment_fault(e):
            raise environment_fault(e, f"reading {path}") from e
        if isinstance(e, FileNotFoundError):
            raise LearnInputError(f"{path}: no such file ({what})") from e
        if isinstance(e, (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError, pd.errors.ParserError)):
            reason = " ".join(ln.strip() for ln in str(e).splitlines()[:2])[:300] or type(e).__name__
            raise LearnInputError(f"{path}: cannot read {what} ({reason})") from e
        raise


def read(path: Path, what: str, loader: Callable[[Path], T]) -> T:
    """`loader(path)` under `reading`."""
    with reading(path, what):
        return loader(path)


def load_split(protocol: str, split_dir: Path) -> dict[str, Any]:
    """A protocol's split file (`features.protocol` names it)."""
    path = split_dir / f"{protocol}.json"
    if not path.exists():
        known = sorted(p.stem for p in split_dir.glob("*.json"))
        raise LearnInputError(
            f"{path}: no such protocol (features.protocol: {protocol!r}); "
            f"known: {', '.join(known) or 'none (run the split stage)'}"
        )
    split: dict[str, Any] = read(path, "split file", lambda p: json.loads(p.read_text()))
    for field in ("classes", "folds"):
        if field not in split:
            raise LearnInputError(f"{path}: split file has no field {field!r}")
    return split


def load_takes(split_dir: Path) -> pd.DataFrame:
    path = split_dir / "takes.parquet"
    takes = read(path, "take table", pd.read_parquet)
    for field in ("take_id", "label", "mode", "subject_id"):
        if field not in takes:
            raise LearnInputError(f"{path}: take table has no field {field!r}")
    return takes.set_index("take_id")


FEATURE_FIELDS = ("take_ids", "offsets", "valid", "lengths", "labels", "modes", "subjects", "features")


def feature_file(protocol: str, backend: str, seed: int, fold: int, root: Path) -> Path:
    """Features of one backend x extractor seed x fold."""
    return root / protocol / backend / f"seed{seed}" / f"fold{fold}.npz"


def load_features(protocol: str, backend: str, seed: int, fold: int, root: Path) -> dict[str, np.ndarray]:
    """A feature file's arrays; ragged: `features` (frames, D) with `offsets` (takes + 1)."""
    path = feature_file(protocol, backend, seed, fold, root)
    with reading(path, "feature file"), np.load(path) as z:
        data = {k: z[k] for k in z.files}
    missing = [f for f in FEATURE_FIELDS if f not in data]
    if missing:
        raise LearnInputError(f"{path}: feature file has no field {missing[0]!r} (rerun the features stage)")
    return data


def feature_seed(seed: int, seeds: list[int], feature_seeds: list[int]) -> int:
    """The feature extractor a sequence-model seed uses: seeds cycle over the extractor seeds."""
    return feature_seeds[seeds.index(seed) % len(feature_seeds)]
