"""The media stage: a browser-playable proxy `data/media/<take_id>.mp4` for every accepted take.

Incremental like align: a proxy's key is (take content sha256, media parameters, a hash of the media code
and encoder version), kept with the proxy's own sha256 in `data/media/index.json`. Adding a take encodes
one; a take leaving the manifest loses its proxy; a proxy whose bytes no longer match the index is rebuilt
with a warning. Temporary files live in `data/interim/.tmp/media`, never inside the DVC output folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import av
import pandas as pd
from tqdm import tqdm

from pipeline import paths, vocab
from pipeline.media.encode import CODEC, MediaConfig
from pipeline.media.proxy import make_proxy
from pipeline.params import MediaParams, Params
from pipeline.utils import io

log = logging.getLogger(__name__)
INDEX_NAME = "index.json"
_CODE_FILES = ("encode.py", "proxy.py")


def media_config(m: MediaParams) -> MediaConfig:
    return MediaConfig(crf=m.crf, preset=m.preset, keyframe_every=m.keyframe_every, min_height=m.min_height,
                       passthrough_playable=m.passthrough_playable)


def code_hash() -> str:
    """The media code and the encoder build: a change to either rebuilds every proxy."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in _CODE_FILES:
        h.update((here / name).read_bytes())
    h.update(f"av {av.__version__} {av.library_versions.get('libavcodec')}".encode())
    return h.hexdigest()


def proxy_key(take_sha: str, cfg: MediaConfig, code: str) -> str:
    """A proxy is made once per (take content, media parameters, media code)."""
    return hashlib.sha256(f"{take_sha}:{cfg.key()}:{code}".encode()).hexdigest()[:32]


def read_index(out_dir: Path) -> dict[str, dict]:
    """take_id -> {key, sha256, ...}; an unreadable index is empty (every proxy is then checked anew)."""
    try:
        data = json.loads((out_dir / INDEX_NAME).read_text(encoding="utf-8"))
        return {str(k): v for k, v in data.get("takes", {}).items() if isinstance(v, dict)}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError) as e:
        log.warning("%s: unreadable (%s); every proxy is rebuilt", out_dir / INDEX_NAME, e)
        return {}


def plan(accepted: pd.DataFrame, out_dir: Path, index: dict[str, dict], keys: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(take ids to (re)build, take ids up to date, take ids whose proxy was damaged)."""
    todo, fresh, damaged = [], [], []
    for take_id in accepted["take_id"]:
        entry, proxy = index.get(take_id), out_dir / f"{take_id}.mp4"
        if entry is None or entry.get("key") != keys[take_id] or not proxy.is_file():
            todo.append(take_id)
        elif io.sha256_file(proxy) != entry.get("sha256"):
            log.warning("%s: proxy bytes differ from %s; rebuilding it", proxy, INDEX_NAME)
            damaged.append(take_id)
            todo.append(take_id)
        else:
            fresh.append(take_id)
    return todo, fresh, damaged


def run_pool(func: Callable[[dict], dict], jobs: list[dict], workers: int) -> Iterator[dict]:
    """Results as they finish; in-process with one worker (or one job)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in tqdm(jobs, desc="media", unit="take"):
            yield func(job)
        return
    # spawn, not fork: a forked child inherits OpenCV's and FFmpeg's thread pools mid-state and can hang
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(func, job) for job in jobs]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="media", unit="take"):
            yield fut.result()


def _take_fps(row) -> float:
    """The file's own rate where the decoder reported one, else the capture log's (frame folders)."""
    file_fps = getattr(row, "file_fps", None)
    return float(file_fps) if file_fps is not None and not pd.isna(file_fps) and file_fps > 0 else float(row.fps)


def _write_index(out_dir: Path, tmp_dir: Path, index: dict[str, dict]) -> None:
    tmp = tmp_dir / INDEX_NAME
    tmp.write_text(json.dumps({"takes": dict(sorted(index.items()))}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / INDEX_NAME)


def run(params: Params, manifest_path: Path = paths.MANIFEST, out_dir: Path = paths.MEDIA,
        tmp_dir: Path = paths.MEDIA_TMP, report_path: Path = paths.MEDIA_REPORT) -> dict:
    """Run the stage; returns the report it writes."""
    t0 = time.perf_counter()
    m = params.media
    manifest = pd.read_parquet(manifest_path)
    accepted = manifest[manifest["status"] == vocab.ACCEPTED].sort_values("take_id").reset_index(drop=True)
    raw = paths.resolve(params.ingest.raw_dir)
    cfg, code = media_config(m), code_hash()
    keys = {row.take_id: proxy_key(row.sha256, cfg, code) for row in accepted.itertuples(index=False)}
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp_dir, ignore_errors=True)      # leftovers of a killed run
    tmp_dir.mkdir(parents=True, exist_ok=True)

    index = {t: e for t, e in read_index(out_dir).items() if t in keys}
    wanted = {f"{t}.mp4" for t in keys}
    stale = [p for p in sorted(out_dir.iterdir()) if p.name != INDEX_NAME and p.name not in wanted]
    for p in stale:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    todo, fresh, damaged = plan(accepted, out_dir, index, keys)
    log.info("media: %d proxies to make, %d up to date, %d damaged, %d stale removed",
             len(todo), len(fresh), len(damaged), len(stale))

    rows = accepted.set_index("take_id")
    jobs = [{"take_id": t, "src": str(raw / rows.at[t, "path"]), "tmp": str(tmp_dir / f"{t}.mp4"),
             "expected_frames": int(rows.at[t, "n_frames"]), "fps": _take_fps(rows.loc[t]), "key": keys[t], "cfg": cfg}
            for t in todo]
    failed, made = [], []
    for res in run_pool(make_proxy, jobs, m.workers):
        take_id = res["take_id"]
        if res["ok"]:
            os.replace(res["tmp"], out_dir / f"{take_id}.mp4")
            index[take_id] = {k: res[k] for k in ("key", "sha256", "bytes", "n_frames", "width", "height", "fps", "source")}
            made.append(res)
        else:
            log.warning("media: %s", res["reason"])
            index.pop(take_id, None)
            (out_dir / f"{take_id}.mp4").unlink(missing_ok=True)
            failed.append({"take_id": take_id, "reason": res["reason"]})
    _write_index(out_dir, tmp_dir, index)
    shutil.rmtree(tmp_dir, ignore_errors=True)

    report = build_report(accepted, index, made, failed, len(fresh), len(damaged), len(stale), time.perf_counter() - t0, m)
    io.write_json(report_path, report)
    log.info("media: %d proxies (%d made, %d up to date), %d failed, %.1f s",
             report["proxies"], len(made), len(fresh), len(failed), report["wall_s"])
    return report


def build_report(accepted: pd.DataFrame, index: dict[str, dict], made: list[dict], failed: list[dict],
                 fresh: int, damaged: int, removed: int, seconds: float, m: MediaParams) -> dict:
    sources = [e.get("source") for e in index.values()]
    return {
        "encoder": f"{CODEC} via PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})",
        "takes": len(accepted),
        "proxies": len(index),
        "proxies_made": len(made),
        "proxies_up_to_date": fresh,
        "proxies_damaged_rebuilt": damaged,
        "proxies_removed": removed,
        "passthrough": sources.count("passthrough"),
        "encoded": sources.count("encoded"),
        "failed": sorted(failed, key=lambda f: f["take_id"]),
        "frames": int(sum(e.get("n_frames", 0) for e in index.values())),
        "bytes": int(sum(e.get("bytes", 0) for e in index.values())),
        "encode_s_per_take": round(sum(r["seconds"] for r in made) / len(made), 3) if made else None,
        "workers": m.workers,
        "wall_s": round(seconds, 2),
    }
