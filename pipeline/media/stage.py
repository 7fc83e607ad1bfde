"""The media stage: a browser-playable proxy `data/media/<take_id>.mp4` for every accepted take.

Incremental like align: a proxy's key is (take content sha256, media parameters, a hash of the media code
and encoder version), kept with the proxy's own sha256 in `data/media/index.json`. Adding a take encodes
one; a take leaving the manifest loses its proxy; a proxy whose bytes no longer match the index is rebuilt
with a warning. Temporary files live in `data/interim/.tmp/media`, never inside the DVC output folder.

A take that cannot be made into a proxy is reported with its reason and the stage goes on (it fails only
when every take failed); a fault of the machine (disk full, memory) stops it with no report written,
keeping the proxies already made (and indexed), so a rerun makes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import av
import pandas as pd

from pipeline import vocab
from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.media.encode import CODEC, MediaConfig, encode_proxy
from pipeline.media.proxy import Encoder, make_proxy
from pipeline.parallel import Executor, pmap
from pipeline.params import MediaParams, Params
from pipeline.stage import main, with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)
INDEX_NAME = "index.json"
_CODE_FILES = ("encode.py", "proxy.py")


class AllProxiesFailed(PipelineError):
    """Every accepted take failed to become a proxy: annotators would have nothing to watch."""


def media_config(m: MediaParams) -> MediaConfig:
    return MediaConfig(
        crf=m.crf,
        preset=m.preset,
        keyframe_every=m.keyframe_every,
        min_height=m.min_height,
        passthrough_playable=m.passthrough_playable,
    )


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


def plan(
    accepted: pd.DataFrame, out_dir: Path, index: dict[str, dict], keys: dict[str, str]
) -> tuple[list[str], list[str], list[str]]:
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


def _take_fps(row) -> float:
    """The file's own rate where the decoder reported one, else the capture log's (frame folders)."""
    file_fps = getattr(row, "file_fps", None)
    return float(file_fps) if file_fps is not None and not pd.isna(file_fps) and file_fps > 0 else float(row.fps)


def _job(take_id: str, row: Any, raw: Path, tmp_dir: Path, key: str, cfg: MediaConfig) -> dict:
    """What a worker needs to make one proxy (plain, picklable values)."""
    return {
        "take_id": take_id,
        "src": str(raw / row["path"]),
        "tmp": str(tmp_dir / f"{take_id}.mp4"),
        "expected_frames": int(row["n_frames"]),
        "fps": _take_fps(row),
        "key": key,
        "cfg": cfg,
    }


def _write_index(out_dir: Path, tmp_dir: Path, index: dict[str, dict]) -> None:
    text = json.dumps({"takes": dict(sorted(index.items()))}, indent=2, sort_keys=True) + "\n"
    with io.atomic_path(out_dir / INDEX_NAME, tmp_dir=tmp_dir) as tmp:
        tmp.write_text(text, encoding="utf-8")


def make_proxies(
    manifest: pd.DataFrame,
    raw: Path,
    out_dir: Path,
    tmp_dir: Path,
    m: MediaParams,
    *,
    executor: Executor | None = None,
    encode: Encoder = encode_proxy,
) -> dict:
    """Bring `out_dir` (proxies and their index) up to date with the manifest's accepted takes; the report.

    Raises `EnvironmentFault` when the machine fails; the proxies made until then stay, indexed.
    """
    t0 = time.perf_counter()
    accepted = manifest[manifest["status"] == vocab.ACCEPTED].sort_values("take_id").reset_index(drop=True)
    cfg, code = media_config(m), code_hash()
    keys = {str(t): proxy_key(str(sha), cfg, code) for t, sha in zip(accepted["take_id"], accepted["sha256"])}
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of a killed run
    tmp_dir.mkdir(parents=True, exist_ok=True)

    index = {t: e for t, e in read_index(out_dir).items() if t in keys}
    wanted = {f"{t}.mp4" for t in keys}
    stale = [p for p in sorted(out_dir.iterdir()) if p.name != INDEX_NAME and p.name not in wanted]
    for p in stale:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    todo, fresh, damaged = plan(accepted, out_dir, index, keys)
    log.info(
        "media: %d proxies to make, %d up to date, %d damaged, %d stale removed",
        len(todo),
        len(fresh),
        len(damaged),
        len(stale),
    )

    rows = accepted.set_index("take_id")
    jobs = [_job(t, rows.loc[t], raw, tmp_dir, keys[t], cfg) for t in todo]
    for t in todo:  # a proxy being rebuilt is not up to date until it is made again
        index.pop(t, None)
    work = make_proxy if encode is encode_proxy else partial(make_proxy, encode=encode)
    failed, made = [], []
    try:
        for res in pmap(work, jobs, executor or Executor("local", m.workers), desc="media", unit="take"):
            take_id = res["take_id"]
            if res["ok"]:
                os.replace(res["tmp"], out_dir / f"{take_id}.mp4")
                index[take_id] = {
                    k: res[k] for k in ("key", "sha256", "bytes", "n_frames", "width", "height", "fps", "source")
                }
                made.append(res)
            else:
                log.warning("media: %s", res["reason"])
                (out_dir / f"{take_id}.mp4").unlink(missing_ok=True)
                failed.append({"take_id": take_id, "reason": res["reason"]})
    except BaseException:
        _keep_finished(out_dir, tmp_dir, index)
        raise
    _write_index(out_dir, tmp_dir, index)
    shutil.rmtree(tmp_dir, ignore_errors=True)
    return build_report(
        accepted, index, made, failed, len(fresh), len(damaged), len(stale), time.perf_counter() - t0, m
    )


def _keep_finished(out_dir: Path, tmp_dir: Path, index: dict[str, dict]) -> None:
    """On the way out of a failed run: index the proxies made so far, so a rerun does not redo them."""
    try:
        _write_index(out_dir, tmp_dir, index)
    except Exception as e:  # the disk may be the very thing that failed; the rerun then rebuilds them
        log.warning("media: could not index the %d proxies made so far (%s)", len(index), e)
    shutil.rmtree(tmp_dir, ignore_errors=True)


def build_report(
    accepted: pd.DataFrame,
    index: dict[str, dict],
    made: list[dict],
    failed: list[dict],
    fresh: int,
    damaged: int,
    removed: int,
    seconds: float,
    m: MediaParams,
) -> dict:
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


def run(layout: Layout, params: Params) -> None:
    """Make the proxies into `data/media` and write `reports/media.json`; fails when every take failed."""
    report = make_proxies(
        pd.read_parquet(layout.manifest),
        layout.resolve(params.ingest.raw_dir),
        layout.media,
        layout.stage_tmp("media"),
        params.media,
        executor=Executor(params.executor.kind, params.media.workers, params.executor.dask_scheduler),
    )
    io.write_json(layout.media_report, with_provenance(report, params, "media", "ingest.raw_dir", "executor"))
    log.info(
        "media: %d proxies (%d made, %d up to date), %d failed, %.1f s",
        report["proxies"],
        report["proxies_made"],
        report["proxies_up_to_date"],
        len(report["failed"]),
        report["wall_s"],
    )
    if report["failed"] and not report["proxies"]:
        first = report["failed"][0]
        raise AllProxiesFailed(
            f"media: every one of the {len(report['failed'])} takes failed "
            f"(first, {first['take_id']}: {first['reason']}); see {layout.media_report}"
        )


if __name__ == "__main__":
    raise SystemExit(main(run))
