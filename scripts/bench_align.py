"""Benchmark the align stage on the current manifest: frames/s beside its floors, peak memory.

Floors, measured in the same run on the same takes and the same number of worker processes:
- decode: reading every frame of the takes (OpenCV), nothing else;
- networks: MTCNN's three networks alone (P-Net over each keyframe's pyramid, R-Net and O-Net over the
  boxes the cascade passes them), on the keyframes align detects on (every `align.keyframe_every`-th
  frame, contrast-stretched where dark), replayed from recorded inputs: no decoding, resizing, box
  handling, tracking, cropping or writing. The stage cannot beat decode + networks.

Prints figures; asserts nothing. Needs `dvc repro ingest` first. Each measurement runs in a fresh
child process (outputs to a temp folder), so peak RSS is that run's own.

    python scripts/bench_align.py [--takes N]
    python scripts/bench_align.py --long 10000   # peak memory of one take of that many frames vs a short one
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import cv2
import pandas as pd

from pipeline.layout import Layout
from pipeline.params import Params, load_params


def _project() -> tuple[Layout, Params]:
    """The repository this script runs in (`$MVFER_ROOT` or the working folder) and its params.yaml."""
    layout = Layout.discover()
    return layout, load_params(layout.params_file)


def _decode(files: list[str]) -> int:
    cv2.setNumThreads(1)
    n = 0
    for f in files:
        cap = cv2.VideoCapture(f)
        while cap.read()[0]:
            n += 1
        cap.release()
    return n


def _decode_job(args: tuple[list[str], int, mp.Queue]) -> None:
    files, workers, q = args
    t = time.perf_counter()
    if workers == 1:
        n = _decode(files)
    else:
        with mp.Pool(workers) as pool:
            n = sum(pool.map(_decode, [files[i::workers] for i in range(workers)]))
    q.put((n, time.perf_counter() - t, _peak_mib()))


def _keyframes(files: list[str], every: int, dark: float) -> list[list]:
    """Per take, the detector's input on every `every`-th frame (stretched where dark, as the tracker does)."""
    from pipeline.align.tracking import contrast_stretch

    takes = []
    for f in files:
        out: list = []
        takes.append(out)
        cap = cv2.VideoCapture(f)
        k = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if k % every == 0:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
                out.append(contrast_stretch(rgb) if float(gray.mean()) < dark else rgb)
            k += 1
        cap.release()
    return takes


def _networks(files: list[str]) -> tuple[int, float, float, float]:
    """(keyframes, CPU seconds of the three networks alone, of the whole cascade one keyframe at a time,
    and of the cascade batched over each take's keyframes) on one core."""
    import torch

    from pipeline.align.detectors.mtcnn import MTCNN

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _, p = _project()
    det = MTCNN(min_face_px=p.align.min_face_px, precision=p.align.precision, device="cpu")
    per_take = _keyframes(files, p.align.keyframe_every, p.align.dark_threshold)
    images = [im for take in per_take for im in take]
    inputs: list[tuple[torch.nn.Module, torch.Tensor]] = []
    hooks = [
        first.register_forward_pre_hook(lambda _m, args, net=net: inputs.append((net, args[0].clone())))
        for net, first in ((det.pnet, det.pnet.conv1), (det.rnet, det.rnet.conv1), (det.onet, det.onet.conv1))
    ]
    t = time.process_time()
    for im in images:
        det.detect(im)
    cascade = time.process_time() - t
    for h in hooks:
        h.remove()
    t = time.process_time()
    for take in per_take:
        det.detect_batch(take)
    batched = time.process_time() - t
    with torch.inference_mode():
        t = time.process_time()
        for net, x in inputs:
            net(x)
        nets = time.process_time() - t
    return len(images), nets, cascade, batched


def _networks_job(args: tuple[list[str], int, mp.Queue]) -> None:
    files, workers, q = args
    t = time.perf_counter()
    if workers == 1:
        parts = [_networks(files)]
    else:
        with mp.Pool(workers) as pool:
            parts = pool.map(_networks, [files[i::workers] for i in range(workers)])
    wall = time.perf_counter() - t
    q.put((*(sum(x[i] for x in parts) for i in range(4)), wall))


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of the workers it waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_mib() -> float:
    """Peak RSS of this process and of any worker it waited for (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def _stage_job(args: tuple[Path, int, int, mp.Queue]) -> None:
    manifest, workers, n_takes, q = args
    logging.basicConfig(level="WARNING")
    from pipeline.align import stage
    from pipeline.align.provenance import provenance

    layout, p = _project()
    a = p.align.model_copy(update={"workers": workers})
    with tempfile.TemporaryDirectory() as tmp:
        m = pd.read_parquet(manifest)
        acc = m[m["status"] == "accepted"].head(n_takes)
        t = time.perf_counter()
        _, _, rep = stage.align(
            acc,
            layout.resolve(p.ingest.raw_dir),
            Path(tmp) / "aligned",
            Path(tmp) / "tmp",
            a,
            provenance(a.detector, a.insightface_pack),
        )
        secs = time.perf_counter() - t
    q.put((rep["frames"], secs, _peak_mib(), _cpu_s()))


def _in_child(target, *args) -> tuple:
    """What the child reports: (frames, seconds, peak RSS MiB over the child and its workers[, CPU seconds])."""
    q: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=target, args=((*args, q),))
    proc.start()
    result = q.get()
    proc.join()
    return result


def stretch_gain(manifest: pd.DataFrame, raw: Path, n_takes: int) -> tuple[int, int, int]:
    """MTCNN hits on dark frames (below align.dark_threshold) without and with the contrast stretch."""
    from pipeline.align.detectors.mtcnn import MTCNN
    from pipeline.align.tracking import contrast_stretch

    _, p = _project()
    det = MTCNN(min_face_px=p.align.min_face_px, device="cpu")
    dark = manifest[(manifest["status"] == "accepted") & (manifest["illumination"] == "dim")].head(n_takes)
    frames = plain = stretched = 0
    for f in dark["path"]:
        cap = cv2.VideoCapture(str(raw / f))
        ok, bgr = cap.read()
        cap.release()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).mean() >= p.align.dark_threshold:
            continue
        frames += 1
        plain += bool(det.detect(rgb))
        stretched += bool(det.detect(contrast_stretch(rgb)))
    return frames, plain, stretched


def _long_video(files: list[str], n_frames: int, dest: Path) -> tuple[int, ...]:
    """One mp4 of `n_frames` frames made by playing the given takes one after another, looping."""
    writer = None
    written = 0
    while written < n_frames:
        for f in files:
            cap = cv2.VideoCapture(f)
            while written < n_frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                if writer is None:
                    writer = cv2.VideoWriter(
                        str(dest), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (bgr.shape[1], bgr.shape[0])
                    )
                writer.write(bgr)
                written += 1
            cap.release()
    if writer is None:
        raise ValueError("no frames to write")
    writer.release()
    return bgr.shape


def _take_job(args: tuple[str, int, mp.Queue]) -> None:
    video, n_frames, q = args
    logging.basicConfig(level="WARNING")
    from pipeline.align import stage
    from pipeline.align.process import process_take, take_key
    from pipeline.align.provenance import provenance, provenance_key

    _, p = _project()
    cfg = stage.align_config(p.align, provenance_key(provenance(p.align.detector, p.align.insightface_pack)))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        r = process_take(
            {
                "take_id": "long",
                "video": video,
                "expected_frames": n_frames,
                "key": take_key("x", cfg),
                "out": str(Path(tmp) / "out" / "long.npz"),
                "cfg": cfg,
                "tmp_dir": str(Path(tmp) / "tmp"),
            }
        )
        secs = time.perf_counter() - t
        size = (Path(tmp) / "out" / "long.npz").stat().st_size
    q.put((r["decoded_frames"], secs, _peak_mib(), size))


def long_take(files: list[str], n_frames: int) -> None:
    """Peak RSS of aligning one take of `n_frames` frames against one of 16: streaming keeps it flat."""
    with tempfile.TemporaryDirectory() as tmp:
        for n in (16, n_frames):
            video = Path(tmp) / f"take{n}.mp4"
            shape = _long_video(files, n, video)
            q: mp.Queue = mp.get_context("spawn").Queue()
            proc = mp.get_context("spawn").Process(target=_take_job, args=((str(video), n, q),))
            proc.start()
            frames, secs, peak, size = q.get()
            proc.join()
            raw = frames * shape[0] * shape[1] * 3 / 2**20
            print(
                f"one take of {frames} frames: {frames / secs:6.1f} frames/s, peak RSS {peak:.0f} MiB "
                f"(its decoded frames alone: {raw:.0f} MiB; output {size / 2**20:.1f} MiB)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--takes", type=int, default=0, help="limit to the first N accepted takes (0: all)")
    ap.add_argument("--long", type=int, default=0, help="only measure one take of this many frames (e.g. 10000)")
    args = ap.parse_args()
    layout, p = _project()
    raw = layout.resolve(p.ingest.raw_dir)
    if args.long:
        m = pd.read_parquet(layout.manifest)
        long_take([str(raw / f) for f in m[m["status"] == "accepted"]["path"].head(50)], args.long)
        return
    manifest = pd.read_parquet(layout.manifest)
    acc = manifest[manifest["status"] == "accepted"]
    n = args.takes or len(acc)
    files = [str(raw / f) for f in acc["path"].head(n)]
    print(
        f"{n} takes, detector {p.align.detector} ({p.align.precision}), keyframe every {p.align.keyframe_every}\n"
        "floors: decode = reading every frame, nothing else; networks = MTCNN's three networks alone on the\n"
        "keyframes' recorded inputs (no decode, resizing, boxes, tracking, crops, writing). frames/s counts\n"
        "every frame of the takes, as the stage does; 'per core' divides by CPU seconds (children included),\n"
        "which a busy machine disturbs less than wall time"
    )
    frames_total = int(acc["n_frames"].head(n).sum())
    for w in (1, 2):
        frames, secs, peak = _in_child(_decode_job, files, w)
        print(f"floor, decode only, {w} worker(s): {frames / secs:7.1f} frames/s wall  (peak RSS {peak:.0f} MiB)")
    nets_rate = None
    if p.align.detector == "mtcnn":
        q: mp.Queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=_networks_job, args=((files, 1, q),))
        proc.start()
        keyframes, nets, cascade, batched, _ = q.get()
        proc.join()
        nets_rate = frames_total / nets
        print(
            f"floor, MTCNN networks only: {nets_rate:7.1f} frames/s per core ({keyframes} keyframes, "
            f"{1000 * nets / keyframes:.1f} ms CPU each)\n"
            f"MTCNN cascade, one keyframe a call (as align runs it): {1000 * cascade / keyframes:.1f} ms each "
            f"= {frames_total / cascade:.1f} frames/s per core; batched over each take's keyframes "
            f"(detect_batch): {1000 * batched / keyframes:.1f} ms each"
        )
    small = max(1, n // 6)
    frames, secs, peak, _ = _in_child(_stage_job, layout.manifest, 2, small)
    print(f"align stage, 2 workers, {small} takes: {frames / secs:7.1f} frames/s wall, peak RSS {peak:.0f} MiB")
    for w in (1, 2):
        frames, secs, peak, cpu = _in_child(_stage_job, layout.manifest, w, n)
        vs = f", {frames / cpu / nets_rate:.2f}x the networks floor" if nets_rate else ""
        print(
            f"align stage, {w} worker(s), {n} takes: {frames / secs:7.1f} frames/s wall, "
            f"{frames / cpu:6.1f} per core{vs}  ({secs:.1f} s, peak RSS {peak:.0f} MiB)"
        )
    f, a, b = stretch_gain(manifest, raw, 200)
    print(f"dark first frames: MTCNN finds {a}/{f} plain, {b}/{f} after the contrast stretch")


if __name__ == "__main__":
    main()
