"""The generic importer: a path template with named fields, and value maps, describe a lab's layout.

`{subject}/{expression}/{subject}_{expression}_{pose}.mp4` matches one video per take; with `{frame}`
(`{imaging}/{light}/{subject}/{expression}/{frame}.jpeg`) frames that share all fields but `{frame}`
form one take (a frame folder). A field may appear more than once: every occurrence must hold the same
value (a name that repeats its folders' subject and expression). `*` matches any text inside one path
component, `**/` any number of folders; a field may not be directly followed by `*` or another field (where
it ends would be a guess). A file (or frame folder) with the same field values as an earlier one is listed
as `same_fields_as`, never merged or dropped: the template needs a field that tells them apart. Reserved
fields: `expression` (the label, required), `subject` (without it each take is its own subject), `frame`,
`take` (optional clip id); every other field is metadata kept as a capture-log column, usable as a mode
field (`ingest.mode_fields: [pose]`). Fields named like capture-log columns (`yaw`, `pitch`, `illumination`,
`camera`, `session`) fill them.

Nothing is invented: a video's frame rate comes from the file, the pose and illumination only from the
names, a sidecar CSV (`import.pattern.sidecar`) or the lab's explicit `frontal: true`; what nobody says
is written empty (unknown). A label that already is an expression name needs no map entry. Two layouts
use this scan: `pattern` (a tree the lab describes, e.g. a public set) and `recordings` (the lab's own
recordings: the lab's subject ids as they are, consent from the lab's table, never a third-party dataset).
"""

from __future__ import annotations

import csv
import logging
import os
import posixpath
import re
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.importers.common import (
    IMPORTERS,
    DatasetImportError,
    ImportResult,
    Take,
    check_label,
    frame_take,
    rel,
    safe_id,
)
from pipeline.params import ImportParams

log = logging.getLogger(__name__)

RESERVED = {"subject", "expression", "frame", "take"}
POSE_FIELDS = ("yaw", "pitch")
SIDECAR_FIELDS = ("yaw", "pitch", "illumination", "camera", "session")
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"})
RECORDINGS = "recordings"  # the lab's own recordings: ids kept, no dataset licence involved
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOKEN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|\*\*/|\*")
# `name (1).mp4`, `name - Copy.mp4`, `name copy.mp4`: what a file manager calls a copy of `name.mp4`
_COPY = re.compile(r"^(?P<base>.+?)(?: \(\d+\)| - [Cc]opy(?: \(\d+\))?| [Cc]opy)(?P<ext>\.[^.]+)?$")


class TemplateError(PipelineError, ValueError):
    """A template that cannot describe a layout; names the problem and the key to edit."""


def compile_template(template: str, key: str = "import.pattern.template") -> tuple[re.Pattern[str], list[str]]:
    """The regex for a template (each field one path component or part of one) and its distinct field names."""
    names = list(dict.fromkeys(_FIELD.findall(template)))
    if "expression" not in names:
        raise TemplateError(f"params.yaml: {key} {template!r} needs an {{expression}} field (the label)")
    _refuse_adjacent_fields(template, key)
    if "frame" in names:
        if template.count("{frame}") > 1:
            raise TemplateError(f"params.yaml: {key} {template!r}: {{frame}} may appear only once")
        if not template.rstrip("/").split("/")[-1].startswith("{frame}"):
            raise TemplateError(f"params.yaml: {key} {template!r}: {{frame}} must begin the last path component")
    return re.compile("^" + _regex_body(template) + "$"), names


def _refuse_adjacent_fields(template: str, key: str) -> None:
    """Fields match as little as they can, so a field directly followed by `*` or another field reads one
    character (`{pose}*` gives pose `l` from `left`): refused, with the fix."""
    tokens = list(_TOKEN.finditer(template))
    for a, b in zip(tokens, tokens[1:]):
        if a.group(1) is not None and a.end() == b.start():
            after = f"{{{b.group(1)}}}" if b.group(1) is not None else "'*'"
            raise TemplateError(
                f"params.yaml: {key} {template!r}: {{{a.group(1)}}} is directly followed by {after}, so where it "
                "ends is ambiguous; put the text that follows it in the names (e.g. `_`) between them"
            )


def _regex_body(template: str) -> str:
    """Literal text escaped; a field one path component or part of one, without blanks (a repeat must hold the
    same value); `*` any text inside a component, `**/` any number of folders."""
    out, pos, seen = [], 0, set()
    for m in _TOKEN.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        name, token = m.group(1), m.group(0)
        if name is None:
            out.append(r"(?:[^/]+/)*" if token == "**/" else r"[^/]*?")
        elif name in seen:
            out.append(f"(?P={name})")
        else:
            seen.add(name)
            out.append(rf"(?P<{name}>[^/\s]+?)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return "".join(out)


def walk_files(src: Path) -> list[Path]:
    """Every file under src, in a stable order (links not followed: a loop cannot hang the import)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in sorted(filenames))
    return found


def apply_map(maps: dict[str, dict[str, str]], name: str, value: str) -> str | None:
    """A field's value through its map (None if the map exists and lacks the value); unmapped fields pass."""
    m = maps.get(name)
    if m is None:
        return value
    return m.get(value, m.get(value.lower()))


def map_label(maps: dict[str, dict[str, str]], value: str, expressions: list[str]) -> str | None:
    """The label through `maps.expression`, else the value itself when it is already an expression name."""
    m = maps.get("expression") or {}
    hit = m.get(value, m.get(value.lower()))
    if hit is not None:
        return hit
    for candidate in (value, value.lower()):
        if candidate in expressions:
            return candidate
    return None


def copy_of(path: Path) -> Path | None:
    """The file `path` is a file manager's copy of (`a (1).mp4` of `a.mp4`), when that file exists beside it."""
    m = _COPY.match(path.name)
    if not m:
        return None
    original = path.with_name(m.group("base") + (m.group("ext") or ""))
    return original if original != path and original.is_file() else None


def read_sidecar(src: Path, name: str, result: ImportResult) -> dict[str, dict[str, str]]:
    """`import.pattern.sidecar`: per source path, the pose/illumination/camera the lab wrote down."""
    if not name:
        return {}
    path = src / name
    if not path.is_file():
        raise DatasetImportError(f"params.yaml: import.pattern.sidecar {name!r}: no such file in {src}")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if "file" not in (reader.fieldnames or []):
            raise DatasetImportError(f"{path}: no 'file' column (the clip's path relative to {src})")
        out: dict[str, dict[str, str]] = {}
        for n, row in enumerate(reader, start=2):
            where = (row.get("file") or "").strip()
            if not where:
                result.exclude(f"{name}:{n}", "bad_sidecar_line", f"{name} line {n}: field 'file' is empty")
                continue
            out[where] = {k: (row.get(k) or "").strip() for k in SIDECAR_FIELDS if (row.get(k) or "").strip()}
    return out


def video_fps(path: Path) -> tuple[float | None, int | None]:
    """(frames per second, frames) as the file's video stream says; (None, None) if it cannot be opened
    (ingest then decodes it and quarantines it with the reason)."""
    import av

    try:
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            rate = v.average_rate or v.base_rate or v.guessed_rate
            return (float(rate) if rate else None), (int(v.frames) or None)
    except (av.error.FFmpegError, IndexError, OSError, ValueError):
        return None, None


def scan(
    src: Path,
    template: str,
    maps: dict[str, dict[str, str]],
    fps: float | None,
    expressions: list[str],
    layout: str = "pattern",
    frontal: bool = False,
    *,
    prefix: str | None = None,
    sidecar: str = "",
    maps_key: str = "import.pattern.maps",
) -> ImportResult:
    """Takes described by a template; files that do not match and unusable values are listed exclusions.

    `fps` is the frame rate of frame folders (videos carry their own); `prefix` starts every take and
    subject id (default: the layout's name; `""` keeps the lab's ids as they are).
    """
    regex, names = compile_template(template)
    prefix = layout if prefix is None else prefix
    if "frame" in names and fps is None:
        raise DatasetImportError(
            f"params.yaml: import.fps.{layout} is missing (the template has {{frame}}: frames carry no rate)"
        )
    result = ImportResult(layout)
    side = read_sidecar(src, sidecar, result)
    groups: dict[tuple, dict[str, str]] = {}
    same_fields: set[str] = set()  # second folders (or files) excluded for sharing another's fields
    for f in walk_files(src):
        r = rel(f, src)
        if sidecar and r == sidecar:
            continue
        original = copy_of(f)
        if original is not None:
            result.exclude(r, "copy_of_file", f"{r}: a copy of {rel(original, src)} (the name says so); not imported")
            continue
        m = regex.match(r)
        if not m:
            if not f.name.startswith("."):
                why = "is not a video" if f.suffix.lower() not in VIDEO_SUFFIXES and "frame" not in names else ""
                result.exclude(
                    r,
                    "not_in_template",
                    f"{r}: does not match the template {template!r}" + (f" ({why})" if why else ""),
                )
            continue
        values = m.groupdict()
        key_fields = tuple((k, v) for k, v in values.items() if k != "frame")
        first = groups.get(key_fields)
        if first is None:
            groups[key_fields] = values | {"__match__": m.group(0)}
            continue
        # Same field values as an earlier file (they differ only in a `*`): listed, never silently merged.
        this, other = r, first["__match__"]
        if "frame" in names:  # frames of one folder share their fields; a second folder does not
            this, other = posixpath.dirname(r), posixpath.dirname(other)
            if this == other or this in same_fields:
                continue
        same_fields.add(this)
        result.exclude(
            this,
            "same_fields_as",
            f"{this}: same fields as {other} ({', '.join(f'{k}={v}' for k, v in key_fields)}); the template's "
            f"fields do not tell these apart: add a field (params.yaml: import.pattern.template {template!r})",
        )
    seen_folders: set[Path] = set()
    for key, values in groups.items():
        where_fields = dict(key)
        # The take's source: the folder holding the frames, or the matched file itself.
        source = (src / values["__match__"]).parent if "frame" in names else src / values["__match__"]
        if source in seen_folders:
            continue
        seen_folders.add(source)
        r = rel(source, src)
        if "frame" in names and not frame_take(source):
            result.exclude(r, "empty_folder", f"{r}: no decodable-looking PNG/JPEG frame in the folder")
            continue
        raw_label = where_fields["expression"]
        label = check_label(
            result, r, map_label(maps, raw_label, expressions), raw_label, expressions, f"{maps_key}.expression"
        )
        if label is None:
            continue
        fields, bad = {}, None
        for k, v in where_fields.items():
            if k in RESERVED:
                continue
            mapped = apply_map(maps, k, v)
            if mapped is None:
                bad = (k, v)
                break
            fields[k] = mapped
        if bad:
            result.exclude(
                r,
                "unknown_value",
                f"{r}: field {bad[0]} = {bad[1]!r} is not in its value map (params.yaml: {maps_key}.{bad[0]})",
            )
            continue
        fields |= side.get(r, {})
        parts = list(dict.fromkeys(where_fields[k] for k in names if k != "frame" and k in where_fields))
        take_id = safe_id(prefix, *parts)
        # Without a {subject} field each take is its own subject (clips from films: nobody is known).
        subject = safe_id(prefix, where_fields["subject"]) if "subject" in where_fields else take_id
        illum = fields.pop("illumination", None) or "unknown"
        yaw, pitch = _pose(fields, frontal)
        take_fps, n_frames = (fps, None) if "frame" in names else video_fps(source)
        if take_fps is None:
            take_fps = fps or 0.0  # ingest decodes the file and quarantines it with the reason
        result.takes.append(
            Take(
                take_id=take_id,
                subject_id=subject,
                source=source,
                label=label,
                fps=take_fps,
                yaw=yaw,
                pitch=pitch,
                illumination=illum,
                fields=fields,
                n_frames=n_frames,
            )
        )
    if "frame" in names:
        _count_empty_folders(src, template, seen_folders, result)
    if frontal:
        result.notes.append("import.pattern.frontal is true: every take without a yaw/pitch field is written yaw 0")
    elif not any(t.yaw is not None for t in result.takes):
        result.notes.append("no yaw/pitch in the names or a sidecar: the pose is written empty (unknown)")
    return result


def _pose(fields: dict[str, str], frontal: bool) -> tuple[float | None, float | None]:
    """yaw and pitch from the names or the sidecar (numbers); 0 only when the lab states `frontal: true`."""
    out: list[float | None] = []
    for k in POSE_FIELDS:
        text = fields.pop(k, "")
        try:
            out.append(float(text) if text != "" else (0.0 if frontal else None))
        except ValueError:
            fields[k] = text  # not a number: kept as written, ingest quarantines it naming the field
            out.append(None)
    return out[0], out[1]


def _scan_cfg(src: Path, cfg: ImportParams, expressions: list[str], layout: str, prefix: str) -> ImportResult:
    p = cfg.pattern
    return scan(
        src,
        p.template,
        p.maps,
        cfg.fps.get(layout, cfg.fps.get("pattern")),
        expressions,
        layout=layout,
        frontal=p.frontal,
        prefix=prefix,
        sidecar=p.sidecar,
    )


@IMPORTERS.register("pattern")
def scan_pattern(src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult:
    """The `pattern` layout: a tree described by `import.pattern` (template, value maps, sidecar); ids as named."""
    return _scan_cfg(src, cfg, expressions, "pattern", "")


@IMPORTERS.register(RECORDINGS)
def scan_recordings(src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult:
    """The lab's own recordings (`mvfer init recordings`): `import.pattern`, the lab's ids, its own consent table."""
    return _scan_cfg(src, cfg, expressions, RECORDINGS, "")


def _count_empty_folders(src: Path, template: str, used: set[Path], result: ImportResult) -> None:
    """Folders where the template expects frames but which hold none: counted, not silently missed."""
    folder_template = template.rstrip("/").rsplit("/", 1)[0]
    if "/" not in template.rstrip("/"):
        return
    regex = re.compile("^" + _regex_body(folder_template) + "$")
    for dirpath, dirnames, _ in os.walk(src):
        dirnames.sort()
        d = Path(dirpath)
        if d == src or d in used:
            continue
        r = rel(d, src)
        if regex.match(r) and not frame_take(d):
            result.exclude(r, "empty_folder", f"{r}: a take folder by the template, but it holds no PNG/JPEG frame")
