"""Make one take's proxy (runs in a worker process): encode or pass through, then prove it matches.

A failure of the take comes back as a reason, so one bad take never stops the stage; a fault of the
machine (disk full, memory) is raised as `EnvironmentFault`, since it is no take's fault.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import environment_fault, is_environment_fault
from pipeline.media.encode import MediaConfig, ProxyError, encode_proxy, playable_problems, probe_video
from pipeline.utils.frames import FrameReadError, iter_frames
from pipeline.utils.io import sha256_file

log = logging.getLogger(__name__)


def _counted(frames, counter: list[int]):
    for f in frames:
        counter[0] += 1
        yield f


def _passthrough(src: Path, tmp: Path, expected: int, cfg: MediaConfig) -> bool:
    """Copy a rig take that a browser can already play; False (re-encode) when it cannot or will not decode."""
    if not cfg.passthrough_playable or src.is_dir() or src.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        return False
    try:
        problems = playable_problems(probe_video(src), expected, cfg.min_height)
    except ProxyError as e:
        log.info("%s: not served as it is: %s", src.name, e)
        return False
    if problems:
        log.debug("%s: re-encoded: %s", src.name, "; ".join(problems))
        return False
    shutil.copyfile(src, tmp)
    return True


Encoder = Callable[..., tuple[int, int, int]]


def make_proxy(job: dict, encode: Encoder = encode_proxy) -> dict:
    """job: take_id, src, tmp, expected_frames, fps, key, cfg. Returns the outcome (ok or a reason).

    `encode` is `encode_proxy` (a parameter so a test can make the disk fail).
    """
    t0 = time.perf_counter()
    src, tmp, expected, cfg = Path(job["src"]), Path(job["tmp"]), int(job["expected_frames"]), job["cfg"]
    out = {"take_id": job["take_id"], "key": job["key"], "tmp": str(tmp), "ok": False, "reason": None}
    try:
        if _passthrough(src, tmp, expected, cfg):
            out["source"] = "passthrough"
            n_in = expected
        else:
            counter = [0]
            encode(_counted(iter_frames(src), counter), tmp, float(job["fps"]), cfg)
            out["source"] = "encoded"
            n_in = counter[0]
        info = probe_video(tmp)
        if not (n_in == info.n_frames == expected):
            raise ProxyError(
                f"frame count differs: take read {n_in}, proxy decodes {info.n_frames}, manifest says {expected}"
            )
        problems = playable_problems(info, expected, 0)
        if problems:
            raise ProxyError("proxy is not browser-playable: " + "; ".join(problems))
        out |= {
            "ok": True,
            "sha256": sha256_file(tmp),
            "bytes": tmp.stat().st_size,
            "n_frames": info.n_frames,
            "width": info.width,
            "height": info.height,
            "fps": float(job["fps"]),
        }
    except Exception as e:
        if is_environment_fault(e):
            tmp.unlink(missing_ok=True)
            raise environment_fault(e, f"media {job['take_id']}") from e
        if isinstance(e, (ProxyError, FrameReadError, OSError, ValueError)):
            out["reason"] = str(e) if str(src) in str(e) else f"{src}: {e}"
        else:  # an encoder/decoder failure of any kind is this take's problem, not the stage's
            out["reason"] = f"{src}: {type(e).__name__}: {e}"
    if not out["ok"]:
        tmp.unlink(missing_ok=True)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out
