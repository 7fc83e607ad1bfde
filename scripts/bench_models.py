"""Benchmark the MV-LSTM layer against torch.nn.LSTM, and the default training run.

Forward + backward time per batch at equal sizes (the ratio is what the extra mode cell costs
against PyTorch's fused oneDNN kernel; 7 gate blocks against 4 put the floor at about 1.75x), for
the MV-LSTM on the compiled scan (pipeline/models/csrc/mv_scan.cpp) and on the Python scan, and for
the attentive variant, then optionally the wall time of the default `train` stage. Prints figures;
asserts nothing. Ratios are against nn.LSTM timed in the same run, seconds before.

    python scripts/bench_models.py [--train] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from pipeline.models import mv_scan_native
from pipeline.models.mv_lstm import MVLSTM
from pipeline.models.mv_lstm_att import AttentiveMVLSTM


def on_scan(impl: str) -> None:
    """Switch the MV-LSTM's recurrence between the compiled (`native`) and the Python scan."""
    os.environ["MVFER_MV_SCAN"] = impl
    mv_scan_native.reset()
    mv_scan_native.native()


def time_fwd_bwd(layer: torch.nn.Module, x: torch.Tensor, repeats: int, clock=time.perf_counter) -> float:
    """Median seconds of one forward + backward pass."""
    times = []
    for _ in range(repeats + 2):
        t = clock()
        out = layer(x)[0]
        out.sum().backward()
        times.append(clock() - t)
    return sorted(times[2:])[len(times[2:]) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", action="store_true", help="also time the default train stage (retrains every model)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the process CPU clock (with --threads 1: robust on a shared, busy machine)",
    )
    args = ap.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    on_scan("native")  # an error, not a silent fallback, when the compiled scan cannot be built
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, "
        f"{'CPU' if args.cpu_time else 'wall'} time; "
        f"compiled scan {'with direct BLAS' if mv_scan_native.native().direct_blas() else 'on ATen GEMMs'}"
    )
    print(
        f"{'B':>4} {'T':>4} {'D':>4} {'H':>4} {'nn.LSTM ms':>11} {'MV-LSTM ms':>11} {'ratio':>6} "
        f"{'MV-att ms':>10} {'ratio':>6} {'Python-scan MV ms':>18} {'ratio':>6}"
    )
    for B, T, D, H in ((32, 16, 64, 64), (32, 16, 128, 128), (64, 32, 256, 256)):
        x = torch.randn(B, T, D, requires_grad=True)
        on_scan("native")
        a = time_fwd_bwd(torch.nn.LSTM(D, H, batch_first=True), x, args.repeats, clock)
        b = time_fwd_bwd(MVLSTM(D, H), x, args.repeats, clock)
        c = time_fwd_bwd(AttentiveMVLSTM(D, H), x, args.repeats, clock)
        on_scan("python")
        d = time_fwd_bwd(MVLSTM(D, H), x, args.repeats, clock)
        on_scan("native")
        print(
            f"{B:>4} {T:>4} {D:>4} {H:>4} {1000 * a:>11.2f} {1000 * b:>11.2f} {b / a:>6.2f} "
            f"{1000 * c:>10.2f} {c / a:>6.2f} {1000 * d:>18.2f} {d / a:>6.2f}"
        )
    if args.train:
        bench_train()


def bench_train() -> None:
    """The default train stage on this checkout's splits and features, writing its models into a temporary project."""
    from pipeline.layout import Layout
    from pipeline.learn.train import run
    from pipeline.params import load_params

    logging.basicConfig(level="WARNING")
    here = Layout.discover()
    p = load_params(here.params_file)
    with tempfile.TemporaryDirectory() as tmp:
        lay = Layout(Path(tmp))
        lay.processed.mkdir(parents=True)
        for name in ("splits", "features"):  # inputs linked, outputs (models, learning curves) in the temporary project
            getattr(lay, name).symlink_to(getattr(here, name), target_is_directory=True)
        t = time.perf_counter()
        run(lay, p)
        n = len(p.features.backends) * len(p.train.variants) * len(p.train.seeds) * p.split.unseen_mode_folds
        print(
            f"default train stage: {n} models in {time.perf_counter() - t:.1f} s "
            f"(MV-LSTM scan: {json.loads(lay.models_provenance.read_text())['provenance']['mv_scan']})"
        )


if __name__ == "__main__":
    main()
