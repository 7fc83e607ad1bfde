"""The generic importer: a path template with named fields, and value maps, describe a lab's layout.

`{imaging}/{light}/{subject}/{expression}/{frame}.jpeg` matches every frame file; frames that share
all fields but `{frame}` form one take (a frame folder). A template without `{frame}` matches one
file per take (a video). Reserved fields: `expression` (the label, required), `subject` (without
it each take is its own subject), `frame`, `take` (optional clip id); every other field is metadata
kept as a capture-log column, usable as a mode field. `illumination` (if a field or a map says so)
fills the log's illumination.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.importers.common import IMPORTERS, ImportResult, Take, check_label, frame_take, rel, safe_id
from pipeline.params import ImportParams

RESERVED = {"subject", "expression", "frame", "take"}
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TemplateError(PipelineError, ValueError):
    """A template that cannot describe a layout; names the problem."""


def compile_template(template: str) -> tuple[re.Pattern[str], list[str]]:
    """The regex for a template (each field one path component or part of one) and its field names."""
    names = _FIELD.findall(template)
    if len(set(names)) != len(names):
        raise TemplateError(f"template {template!r}: a field appears twice")
    if "expression" not in names:
        raise TemplateError(f"template {template!r}: needs an {{expression}} field (the label)")
    if "frame" in names and not template.rstrip("/").split("/")[-1].startswith("{frame}"):
        raise TemplateError(f"template {template!r}: {{frame}} must begin the last path component")
    return re.compile("^" + _regex_body(template) + "$"), names


def _regex_body(template: str) -> str:
    """Literal text escaped; each field one path component or part of one (frames ordered by their number)."""
    out, pos = [], 0
    for m in _FIELD.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        name = m.group(1)
        out.append(rf"(?P<{name}>[^/]+?)")
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


def scan(
    src: Path,
    template: str,
    maps: dict[str, dict[str, str]],
    fps: float,
    expressions: list[str],
    layout: str = "pattern",
    frontal: bool = False,
) -> ImportResult:
    """Takes described by a template; files that do not match and unusable values are counted exclusions."""
    regex, names = compile_template(template)
    result = ImportResult(layout)
    groups: dict[tuple, dict[str, str]] = {}
    for f in walk_files(src):
        r = rel(f, src)
        m = regex.match(r)
        if not m:
            if not f.name.startswith("."):
                result.exclude(r, "not_in_template", f"{r}: does not match the template {template!r}")
            continue
        values = m.groupdict()
        key_fields = tuple((k, v) for k, v in values.items() if k != "frame")
        groups.setdefault(key_fields, values)
    seen_folders: set[Path] = set()
    for key, values in groups.items():
        where_fields = dict(key)
        # The take's source: the folder holding the frames, or the matched file itself.
        source = _source(src, template, values)
        if source in seen_folders:
            continue
        seen_folders.add(source)
        r = rel(source, src)
        if "frame" in names and not frame_take(source):
            result.exclude(r, "empty_folder", f"{r}: no decodable-looking PNG/JPEG frame in the folder")
            continue
        raw_label = where_fields["expression"]
        label = check_label(result, r, apply_map(maps, "expression", raw_label), raw_label, expressions)
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
                r, "unknown_value", f"{r}: field {bad[0]} = {bad[1]!r} is not in its value map (params import)"
            )
            continue
        parts = [where_fields[k] for k in names if k not in ("frame",) and k in where_fields]
        take_id = safe_id(layout, *parts)
        # Without a {subject} field each take is its own subject (clips from films: nobody is known).
        subject = safe_id(layout, where_fields["subject"]) if "subject" in where_fields else take_id
        illum = fields.pop("illumination", None) or "unknown"
        result.takes.append(
            Take(
                take_id=take_id,
                subject_id=subject,
                source=source,
                label=label,
                fps=fps,
                yaw=0.0 if frontal else None,
                pitch=0.0 if frontal else None,
                illumination=illum,
                fields=fields,
            )
        )
    if "frame" in names:
        _count_empty_folders(src, template, seen_folders, result)
    return result


@IMPORTERS.register("pattern")
def scan_pattern(src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult:
    """The `pattern` layout: a lab's own tree described by `import.pattern` (template, value maps, frontal)."""
    p = cfg.pattern
    return scan(src, p.template, p.maps, cfg.fps["pattern"], expressions, layout="pattern", frontal=p.frontal)


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


def _source(src: Path, template: str, values: dict[str, str]) -> Path:
    """Fill the template with a match's values; with {frame} the take is the folder holding the frame."""
    filled = _FIELD.sub(lambda m: values[m.group(1)], template)
    path = src / filled
    return path.parent if "frame" in values else path
