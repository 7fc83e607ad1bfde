"""Shared helpers of the learning stages: device, seeding, split files, feature files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import paths


def device() -> torch.device:
    """CUDA when present, else CPU (tests and CI run on CPU)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a generator for data order."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def load_split(protocol: str, split_dir: Path = paths.SPLITS) -> dict:
    path = split_dir / f"{protocol}.json"
    if not path.exists():
        known = sorted(p.stem for p in split_dir.glob("*.json"))
        raise FileNotFoundError(f"{path}: no such protocol; known: {', '.join(known) or 'none (run the split stage)'}")
    return json.loads(path.read_text())


def load_takes(split_dir: Path = paths.SPLITS) -> pd.DataFrame:
    return pd.read_parquet(split_dir / "takes.parquet").set_index("take_id")


def feature_file(protocol: str, backend: str, seed: int, fold: int, root: Path = paths.FEATURES) -> Path:
    """Features of one backend x extractor seed x fold."""
    return root / protocol / backend / f"seed{seed}" / f"fold{fold}.npz"


def load_features(protocol: str, backend: str, seed: int, fold: int, root: Path = paths.FEATURES) -> dict[str, np.ndarray]:
    """A feature file's arrays; ragged: `features` (frames, D) with `offsets` (takes + 1)."""
    with np.load(feature_file(protocol, backend, seed, fold, root)) as z:
        return {k: z[k] for k in z.files}


def feature_seed(seed: int, seeds: list[int], feature_seeds: list[int]) -> int:
    """The feature extractor a sequence-model seed uses: seeds cycle over the extractor seeds."""
    return feature_seeds[seeds.index(seed) % len(feature_seeds)]
