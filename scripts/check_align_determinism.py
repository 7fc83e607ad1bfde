"""Run the align stage under two CPU code paths on the current manifest and compare the files.

Measures how often the 1/64-pixel grid is straddled in practice: each run is a fresh child
process (outputs in a temp folder), one with the native code path, one with
ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=AVX2, MKL_CBWR=COMPATIBLE. Prints the number of
takes whose .npz bytes differ and which arrays. Asserts nothing. Needs `dvc repro ingest` first.

    python scripts/check_align_determinism.py [--takes N] [--precision float32|float64] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.layout import Layout

PORTABLE = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
_CHILD = """
import sys, time
from pathlib import Path
import pandas as pd
from pipeline.align import stage
from pipeline.align.provenance import provenance
from pipeline.layout import Layout
from pipeline.params import load_params
layout = Layout.discover()
p = load_params(layout.params_file)
a = p.align.model_copy(update={"workers": int(sys.argv[2]), "precision": sys.argv[3]})
out = Path(sys.argv[1])
t = time.perf_counter()
stage.align(pd.read_parquet(sys.argv[4]), layout.resolve(p.ingest.raw_dir), out / "aligned", out / "tmp", a,
            provenance(a.detector, a.insightface_pack))
print(f"{time.perf_counter() - t:.1f}")
"""


def run(out: Path, env: dict[str, str], workers: int, precision: str, manifest: Path) -> float:
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(out), str(workers), precision, str(manifest)],
        env=clean | env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise SystemExit(f"align child failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def compare(a: Path, b: Path) -> tuple[int, list[str], Counter]:
    files = sorted(p.name for p in a.glob("*.npz"))
    differ, members = [], Counter()
    for name in files:
        if (a / name).read_bytes() == (b / name).read_bytes():
            continue
        differ.append(name)
        with np.load(a / name) as za, np.load(b / name) as zb:
            members.update(m for m in za.files if not np.array_equal(za[m], zb[m], equal_nan=za[m].dtype.kind == "f"))
    return len(files), differ, members


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--takes", type=int, default=0, help="first N accepted takes (0: all)")
    ap.add_argument("--precision", default="float64", choices=["float32", "float64"])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    layout = Layout.discover()
    with tempfile.TemporaryDirectory(dir=layout.interim) as tmp:
        m = pd.read_parquet(layout.manifest)
        acc = m[m["status"] == "accepted"]
        sub = Path(tmp) / "manifest.parquet"
        (acc.head(args.takes) if args.takes else acc).to_parquet(sub, index=False)
        secs = {
            name: run(Path(tmp) / name, env, args.workers, args.precision, sub)
            for name, env in (("native", {}), ("portable", PORTABLE))
        }
        n, differ, members = compare(Path(tmp) / "native" / "aligned", Path(tmp) / "portable" / "aligned")
    print(
        f"MTCNN {args.precision}: {len(differ)} of {n} aligned files differ between the native and the portable "
        f"CPU code path (arrays: {dict(members) or 'none'}); "
        f"align took {secs['native']:.1f} s / {secs['portable']:.1f} s"
    )
    for name in differ[:10]:
        print("  differs:", name)


if __name__ == "__main__":
    main()
