"""Look at a lab's folder of recordings and propose how to read it: template, label map, modes, bounds.

Why: a lab's naming (`P01/happy/P01_happy_left.mp4`) already says who, what and how; reading it off the
files is quicker and less error-prone than writing a template by hand, one error at a time. Pure: the
files are only listed and their headers read (frame rate, size, frame count); nothing is written.
The proposal is what `mvfer init recordings` writes into params.yaml, with every decision and every
file it cannot use (and why) listed, so the lab checks it rather than discovers it.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipeline.errors import PipelineError
from pipeline.importers.pattern import VIDEO_SUFFIXES, copy_of, walk_files

# What labs write for the expressions (identity needs no entry: a name in rig.expressions is its own label).
SYNONYMS: dict[str, str] = {
    "happy": "happiness",
    "joy": "happiness",
    "smile": "happiness",
    "sad": "sadness",
    "angry": "anger",
    "anger": "anger",
    "mad": "anger",
    "surprised": "surprise",
    "surprise": "surprise",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "neutral": "neutral",
    "contempt": "contempt",
}
POSE_WORDS = frozenset(
    {"left", "right", "front", "frontal", "center", "centre", "profile", "up", "down", "l", "r", "c", "f"}
)
_POSE_RE = re.compile(r"^(yaw|pose|view|angle)[-+_]?\d+$|^[-+]?\d{1,2}deg$", re.IGNORECASE)
_CAMERA_RE = re.compile(r"^(cam|camera)[-_]?[A-Za-z0-9]{1,3}$", re.IGNORECASE)
LIGHT_WORDS = frozenset({"dim", "dark", "bright", "strong", "weak", "frontal", "ambient", "lamp", "low", "high"})
_SUBJECT_RE = re.compile(r"^[A-Za-z]{0,8}[-_]?\d{1,6}$")
SEPARATORS = ("_", "-", ".")


class InspectError(PipelineError, ValueError):
    """The folder holds nothing this command can read as recordings (one line naming the folder)."""


@dataclass(frozen=True)
class Clip:
    """One video as its header describes it (None where the header does not say or the file does not open)."""

    rel: str
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Wart:
    """A file that will not become a usable take as it stands, with a stable code and a sentence."""

    path: str
    code: str
    reason: str


@dataclass
class Proposal:
    """How to read the folder, and what the lab must still decide."""

    template: str
    label_map: dict[str, str]  # only the names that are not expression names already
    fields: dict[str, list[str]]  # field -> the values seen
    mode_fields: list[str]
    modes: list[str]
    subjects: list[str]
    clips: list[Clip]
    warts: list[Wart] = field(default_factory=list)
    unmapped_labels: list[str] = field(default_factory=list)
    fps: float | None = None
    bounds: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def probe_clip(path: Path, rel: str) -> Clip:
    """Frame rate, size and frame count from the file's header (nothing decoded but the first frames)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return Clip(rel, error="no video stream")
            v = c.streams.video[0]
            rate = v.average_rate or v.base_rate or v.guessed_rate
            fps = float(rate) if rate else None
            frames = int(v.frames) or None
            dur = float(v.duration * v.time_base) if v.duration and v.time_base else None
            if dur is None and c.duration:
                dur = c.duration / 1_000_000
            if frames is None and dur and fps:
                frames = int(round(dur * fps))
            if dur is None and frames and fps:
                dur = frames / fps
            return Clip(rel, fps, v.codec_context.width or None, v.codec_context.height or None, frames, dur)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        return Clip(rel, error=str(reason))


def normalise_label(value: str, expressions: list[str]) -> str | None:
    """An expression name for what the lab wrote, or None."""
    low = value.lower()
    if value in expressions:
        return value
    if low in expressions:
        return low
    hit = SYNONYMS.get(low)
    return hit if hit in expressions else None


def _split(rel: str, sep: str) -> tuple[list[str], list[str], str]:
    p = PurePosixPath(rel)
    return list(p.parent.parts) if str(p.parent) != "." else [], p.stem.split(sep), p.suffix


def _kind(values: list[str], expressions: list[str]) -> str:
    """What a varying position holds: expression, subject, pose, camera, illumination or other."""
    distinct = set(values)
    share = lambda test: sum(1 for v in values if test(v)) / len(values)  # noqa: E731
    if share(lambda v: normalise_label(v, expressions) is not None) >= 0.8:
        return "expression"
    if share(lambda v: v.lower() in POSE_WORDS or bool(_POSE_RE.match(v))) >= 0.9:
        return "pose"
    if share(lambda v: bool(_CAMERA_RE.match(v))) >= 0.9 and len(distinct) > 1:
        return "camera"
    if share(lambda v: v.lower() in LIGHT_WORDS) >= 0.9:
        return "illumination"
    if share(lambda v: bool(_SUBJECT_RE.match(v))) >= 0.9:
        return "subject"
    return "other"


def propose(src: Path, expressions: list[str], illuminations: list[str]) -> Proposal:
    """Read the folder's names and headers; propose the template, label map, modes and bounds."""
    src = Path(src)
    if not src.is_dir():
        raise InspectError(f"{src}: folder not found")
    warts: list[Wart] = []
    videos: list[tuple[str, Path]] = []
    for f in walk_files(src):
        rel = f.relative_to(src).as_posix()
        if f.name.startswith("."):
            continue
        if f.suffix.lower() not in VIDEO_SUFFIXES:
            warts.append(Wart(rel, "not_a_video", f"{rel}: not a video ({f.suffix or 'no extension'}); not imported"))
            continue
        original = copy_of(f)
        if original is not None:
            warts.append(
                Wart(rel, "copy_of_file", f"{rel}: a copy of {original.relative_to(src).as_posix()}; not imported")
            )
            continue
        if re.search(r"\s", rel):
            warts.append(Wart(rel, "blank_in_name", f"{rel}: a blank in the name does not fit the template"))
            continue
        videos.append((rel, f))
    if not videos:
        raise InspectError(
            f"{src}: no video file ({', '.join(sorted(VIDEO_SUFFIXES))}) found; {len(warts)} other file(s)"
        )
    stems = [PurePosixPath(r).stem for r, _ in videos]
    sep = max(SEPARATORS, key=lambda s: sum(s in st for st in stems))
    shapes = Counter((len(_split(r, sep)[0]), len(_split(r, sep)[1]), _split(r, sep)[2]) for r, _ in videos)
    (n_dirs, n_tokens, suffix), _ = shapes.most_common(1)[0]
    kept = []
    for r, f in videos:
        d, t, s = _split(r, sep)
        if (len(d), len(t), s) == (n_dirs, n_tokens, suffix):
            kept.append((r, f, d + t))
        else:
            warts.append(Wart(r, "not_in_template", f"{r}: named unlike the other {len(videos) - 1} videos"))
    columns = list(zip(*(parts for _, _, parts in kept)))
    keys = [_key_prefix(list(c)) for c in columns]  # `sub-P01`, `exp=happy`: the key is literal, the value a field
    kept = [(r, f, [v[len(k) :] for v, k in zip(parts, keys, strict=True)]) for r, f, parts in kept]
    columns = list(zip(*(parts for _, _, parts in kept)))
    names = _name_positions([list(c) for c in columns], expressions)
    parts: list[str] = [k + str(c[0]) for k, c in zip(keys, columns, strict=True)]
    wrapped = [
        keys[i] + _wrap(p[len(keys[i]) :], names[i]) if names[i] else _wrap(p, None) for i, p in enumerate(parts)
    ]
    template = "/".join(wrapped[:n_dirs])
    stem = sep.join(wrapped[n_dirs:])
    template = (template + "/" if template else "") + stem + suffix
    fields: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        if name is not None and name not in fields:
            fields[name] = sorted(set(columns[i]))
    if "expression" not in fields:
        raise InspectError(
            f"{src}: no part of the names reads as an expression ({', '.join(expressions)} or a common synonym); "
            "write import.pattern.template by hand"
        )
    label_map = {}
    unmapped = []
    for v in fields["expression"]:
        hit = normalise_label(v, expressions)
        if hit is None:
            unmapped.append(v)
        elif hit != v:
            label_map[v] = hit
    mode_fields: list[str] = [f for f in ("pose", "camera", "illumination") if f in fields] or ["illumination"]
    modes = _modes(kept, names, mode_fields) if any(f in fields for f in mode_fields) else ["unknown"]
    clips = [probe_clip(f, r) for r, f, _ in kept]
    prop = Proposal(
        template=template,
        label_map=label_map,
        fields=fields,
        mode_fields=mode_fields,
        modes=modes,
        subjects=fields.get("subject", []),
        clips=clips,
        warts=warts,
        unmapped_labels=unmapped,
    )
    _bounds(prop, illuminations)
    if "illumination" in fields:
        odd = [v for v in fields["illumination"] if v not in illuminations]
        if odd:
            prop.notes.append(
                f"illumination value(s) {', '.join(odd)} are not in rig.illuminations: add them there or map them "
                "in import.pattern.maps.illumination"
            )
    return prop


def _key_prefix(values: list[str]) -> str:
    """The literal key every value of a name position starts with, up to its `-` or `=` (`sub-` of `sub-P01`,
    `sub-P02`), so the value after it can be a field; "" when the values share no such key."""
    common = os.path.commonprefix(values)
    cut = max(common.rfind("-"), common.rfind("="))
    key = common[: cut + 1] if cut > 0 else ""
    return key if key and all(len(v) > len(key) for v in values) else ""


def _wrap(literal: str, name: str | None) -> str:
    return f"{{{name}}}" if name else literal.replace("{", "").replace("}", "")


def _name_positions(columns: list[list[str]], expressions: list[str]) -> list[str | None]:
    """A field name per position (None: a constant, kept literally); a position equal to an earlier one in every
    file repeats that field (the subject in the folder and in the name)."""
    names: list[str | None] = [None] * len(columns)
    used: set[str] = set()
    others = 0
    for i, col in enumerate(columns):
        for j in range(i):
            if names[j] is not None and columns[j] == col:
                names[i] = names[j]
                break
        if names[i] is not None or len(set(col)) == 1:
            continue
        kind = _kind(col, expressions)
        if kind == "other" or kind in used:
            kind = "take" if "take" not in used else f"field{others}"
            others += 1
        names[i] = kind
        used.add(kind)
    if "subject" not in used:  # the first varying folder is most likely the person
        for i, col in enumerate(columns):
            if names[i] in ("take", "field0") and len(set(col)) > 1:
                old = names[i]
                names = ["subject" if n == old else n for n in names]
                break
    return names


def _modes(kept: list[tuple[str, Path, list[str]]], names: list[str | None], mode_fields: list[str]) -> list[str]:
    out = set()
    for _, _, parts in kept:
        values = {n: parts[i] for i, n in enumerate(names) if n is not None}
        out.add("/".join(values.get(f, "unknown") for f in mode_fields))
    return sorted(out)


def _bounds(prop: Proposal, illuminations: list[str]) -> None:
    """Ingest bounds around what the clips are: a clip far longer than the others (a recording left running)
    or at another frame rate is named here and quarantined by ingest with the reason."""
    ok = [c for c in prop.clips if c.error is None]
    for c in prop.clips:
        if c.error is not None:
            prop.warts.append(
                Wart(c.rel, "unreadable", f"{c.rel}: does not open ({c.error}); ingest quarantines it with the reason")
            )
    if not ok:
        return
    fps_values = [c.fps for c in ok if c.fps]
    durations = [c.duration_s for c in ok if c.duration_s]
    fps = statistics.median(fps_values) if fps_values else None
    prop.fps = fps
    if fps:
        for c in ok:
            if c.fps and abs(c.fps - fps) > 0.05 * fps:
                prop.notes.append(f"{c.rel}: {c.fps:g} fps, the others {fps:g} fps (the file's rate is kept)")
    if durations:
        med = statistics.median(durations)
        longest = max(10.0, math.ceil(3 * med))
        shortest = min(0.5, round(0.5 * min(durations), 2))
        prop.bounds["duration_s"] = [shortest, float(longest)]
        for c in ok:
            if c.duration_s and c.duration_s > longest:
                prop.warts.append(
                    Wart(
                        c.rel,
                        "long_clip",
                        f"{c.rel}: {c.duration_s:.1f} s while the median clip is {med:.1f} s; ingest quarantines it "
                        f"(ingest.bounds.duration_s max {longest:g}: raise it to keep the clip)",
                    )
                )
    sizes = [min(c.width or 0, c.height or 0) for c in ok if c.width and c.height]
    if sizes:
        prop.bounds["width"] = [float(min(64, min(c.width or 64 for c in ok))), 4096.0]
        prop.bounds["height"] = [float(min(64, min(c.height or 64 for c in ok))), 4096.0]
    frames = [c.frames for c in ok if c.frames]
    if frames:
        prop.bounds["n_frames"] = [float(min(8, min(frames))), 100000.0]
