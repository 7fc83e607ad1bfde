"""Benchmark the capture simulator: frames per second per core, rendering alone and with encoding.

Prints figures; asserts nothing. Run with `make bench` (or `python scripts/bench_capture.py`).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.capture.expressions import au_vector
from pipeline.capture.face_model import features_from_aus, sample_identity
from pipeline.capture.render import ILLUMINATIONS, HeadRenderer
from pipeline.capture.simulate import simulate
from pipeline.layout import Layout
from pipeline.params import load_params


def bench_render(frame_size: int, n: int) -> float:
    """Frames per second of rendering alone (no encoding), one core."""
    ident = sample_identity(np.random.default_rng(0), tone_index=3)
    r = HeadRenderer(ident, frame_size)
    rng = np.random.default_rng(0)
    light = ILLUMINATIONS["left"]
    bg = r.backdrop(30, light, rng)
    feats = [features_from_aus(au_vector("fear", i / n), ident.au_gain) for i in range(n)]
    r.render(feats[0], 30, 0, light, (0, 0), rng, bg)
    t = time.perf_counter()
    for f in feats:
        r.render(f, 30, 0, light, (0, 0), rng, bg)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subjects", type=int, default=2, help="subjects to simulate end to end")
    args = ap.parse_args()
    logging.basicConfig(level="WARNING")
    p = load_params(Layout.discover().params_file).capture
    print(f"render only, {p.frame_size}px, 1 core: {bench_render(p.frame_size, 100):.1f} frames/s")
    for workers in (1, 2):
        q = p.model_copy(
            update={"n_subjects": args.subjects, "n_withdrawn": 0, "n_no_public_release": 0, "workers": workers}
        )
        with tempfile.TemporaryDirectory() as tmp:
            rep = simulate(q, Path(tmp) / "raw")
        print(
            f"simulate {rep['n_takes']} takes / {rep['n_frames']} frames with {workers} worker(s): "
            f"{rep['frames_per_s']:.1f} frames/s wall, {rep['frames_per_s_per_core']:.1f} frames/s per core"
        )


if __name__ == "__main__":
    main()
