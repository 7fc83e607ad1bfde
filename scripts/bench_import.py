"""Benchmark `mvfer import` + ingest on a generated Oulu-CASIA-shaped tree: frames/s and peak memory.

The tree is built from simulated faces (a tiny capture rendered once, its frames resized to
Oulu-CASIA's 320x240 and written as JPEG under OriginalImg/VL/<light>/Pnnn/<Expression>/), so
nothing is downloaded. Each measurement runs in a fresh child process, so its peak RSS is its own;
running it for growing numbers of takes shows whether memory stays flat. Prints figures; asserts nothing.

    python scripts/bench_import.py --takes 160 320 640 --frames 16 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path

import cv2

from pipeline.capture.simulate import simulate
from pipeline.layout import Layout
from pipeline.params import CaptureParams, Pose, load_params
from pipeline.utils.frames import iter_frames

LIGHTS, EXPRESSIONS = ("Strong", "Weak", "Dark"), ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")


def build_tree(root: Path, n_takes: int, n_frames: int, work: Path) -> int:
    """n_takes take folders of n_frames 320x240 JPEG frames each; returns the number of frames written."""
    sim = work / "sim"
    if not sim.exists():
        simulate(
            CaptureParams(
                seed=7,
                n_subjects=2,
                n_withdrawn=0,
                n_no_public_release=0,
                expressions=["happiness", "surprise"],
                poses=[Pose(camera="cam_c", yaw=0, pitch=0)],
                illuminations=["frontal", "left"],
                frame_size=96,
                fps=25.0,
                n_frames=n_frames,
                return_to_neutral=False,
                sessions=1,
                workers=1,
            ),
            sim,
        )
    faces = [[cv2.resize(f, (320, 240)) for f in iter_frames(p)] for p in sorted((sim / "takes").iterdir())]
    n = 0
    for i in range(n_takes):
        subject, rest = divmod(i, len(LIGHTS) * len(EXPRESSIONS))
        light, expr = LIGHTS[rest // len(EXPRESSIONS)], EXPRESSIONS[rest % len(EXPRESSIONS)]
        d = root / "OriginalImg" / "VL" / light / f"P{subject + 1:03d}" / expr
        d.mkdir(parents=True)
        for j, frame in enumerate(faces[i % len(faces)][:n_frames]):
            frame = frame.copy()
            # the take's number as 8x8 black/white blocks: distinct content (no duplicate_content)
            for bit in range(12):
                frame[:8, 8 * bit : 8 * bit + 8] = 255 if (i >> bit) & 1 else 0
            (d / f"{j:03d}.jpeg").write_bytes(cv2.imencode(".jpeg", frame)[1].tobytes())
            n += 1
    return n


def _measure(args: tuple[str, Path, Path, int, mp.Queue]) -> None:
    """In a fresh process: import (or ingest) once; report wall time and this process's peak RSS."""
    what, src, out, workers, q = args
    from pipeline.importers import run_import
    from pipeline.ingest.run import ingest

    p = load_params(Layout.discover().params_file)
    lic = p.import_.licence.model_copy(update={"terms": "benchmark", "research_use": True})
    p = p.model_copy(
        update={
            "import_": p.import_.model_copy(update={"licence": lic}),
            "ingest": p.ingest.model_copy(update={"workers": workers, "mode_fields": ["imaging", "light"]}),
        }
    )
    t = time.perf_counter()
    if what == "import":
        rep = run_import("oulu-casia", src, out, p.import_, p.rig.expressions)
        n = rep["frames"]
    else:
        _, rep = ingest(p, out)
        n = rep["accepted_frames"]
    wall = time.perf_counter() - t
    q.put(
        {
            "what": what,
            "workers": workers,
            "frames": n,
            "wall_s": round(wall, 2),
            "frames_per_s": round(n / wall, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_worker_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        }
    )


def measure(what: str, src: Path, out: Path, workers: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_measure, args=((what, src, out, workers, q),))
    proc.start()
    res = q.get()
    proc.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--takes", type=int, nargs="+", default=[160, 320, 640])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_import."))
    results = []
    for n in a.takes:
        src, out = work / f"src{n}", work / f"out{n}"
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        frames = build_tree(src, n, a.frames, work)
        r = measure("import", src, out, 1) | {"takes": n, "tree_frames": frames}
        results.append(r)
        print(json.dumps(r), flush=True)
        for w in a.workers:
            r = measure("ingest", src, out, w) | {"takes": n}
            results.append(r)
            print(json.dumps(r), flush=True)
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
