"""Benchmark the MV-LSTM layer against torch.nn.LSTM, and the default training run.

Forward + backward time per batch at equal sizes (the ratio is what the extra mode cell and our
Python time loop cost against PyTorch's fused kernel), then optionally the wall time of the
default `train` stage. Prints figures; asserts nothing.

    python scripts/bench_models.py [--train]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from pipeline.models.mv_lstm import MVLSTM


def time_fwd_bwd(layer: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward pass."""
    times = []
    for _ in range(repeats + 2):
        t = time.perf_counter()
        out = layer(x)[0]
        out.sum().backward()
        times.append(time.perf_counter() - t)
    return sorted(times[2:])[len(times[2:]) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", action="store_true", help="also time the default train stage (retrains every model)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'B':>4} {'T':>4} {'D':>4} {'H':>4} {'nn.LSTM ms':>11} {'MV-LSTM ms':>11} {'ratio':>6}")
    for B, T, D, H in ((32, 16, 64, 64), (32, 16, 128, 128), (64, 32, 256, 256)):
        x = torch.randn(B, T, D, requires_grad=True)
        lstm = torch.nn.LSTM(D, H, batch_first=True)
        mv = MVLSTM(D, H)
        a = time_fwd_bwd(lstm, x, args.repeats)
        b = time_fwd_bwd(mv, x, args.repeats)
        print(f"{B:>4} {T:>4} {D:>4} {H:>4} {1000 * a:>11.2f} {1000 * b:>11.2f} {b / a:>6.2f}")
    if args.train:
        from pipeline.learn.train import run
        from pipeline.params import params

        logging.basicConfig(level="WARNING")
        p = params()
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            run(p.train, p.features.protocol, models_root=Path(tmp) / "models", history_path=Path(tmp) / "curves.csv")
            n = len(p.train.variants) * len(p.train.seeds) * p.split.unseen_mode_folds
            print(f"default train stage: {n} models in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
