"""Importers for the public dynamic-FER layouts, one module each, registered by name in `IMPORTERS`.

`mvfer import <layout> SRC --out DIR` reads a dataset tree (never writing into it) and writes the
rig layout ingest reads. Each module registers `scan(src, params.import, rig expressions) ->
ImportResult` with `@IMPORTERS.register(NAME)`; importing this package imports them all, so
`IMPORTERS.names()` is the list of layouts (the CLI's help takes it from there).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.importers import afew, ckplus, dfew, ferv39k, mafw, oulu_casia, pattern  # noqa: F401  (registration)
from pipeline.importers.common import (
    IMPORT_REPORT,
    IMPORTERS,
    OWN_RECORDINGS,
    DatasetImportError,
    Importer,
    Link,
    check_source,
    link_or_copy,
    write_rig,
)
from pipeline.params import ImportParams

__all__ = ["IMPORTERS", "DatasetImportError", "NothingImportedError", "get", "run_import"]

FPS_FROM_FILES = frozenset({"pattern", "recordings"})  # videos carry their rate; import.fps only for frame folders
LAYOUT_KEY = "layout"  # what an unknown name is reported against: the command's argument


def get(layout: str) -> Importer:
    """The importer for a layout name; an unknown name is one line listing the known ones."""
    return IMPORTERS.get(layout, key=LAYOUT_KEY)


def run_import(
    layout: str, src: Path, out: Path, cfg: ImportParams, expressions: list[str], link: Link = link_or_copy
) -> dict:
    """Scan the source tree with the layout's importer and write the rig layout into `out`."""
    src, out = Path(src), Path(out)
    importer = get(layout)
    if layout not in cfg.fps and layout not in FPS_FROM_FILES:
        raise DatasetImportError(f"params.yaml: import.fps.{layout} is missing (frame folders carry no frame rate)")
    check_source(src, out)
    try:
        result = importer(src, cfg, expressions)
    except KeyError as e:  # a label map the layout reads (`cfg.label_maps[NAME]`) is not in params.yaml
        key = e.args[0] if e.args else None
        if isinstance(key, str) and key not in cfg.label_maps:
            raise DatasetImportError(
                f"params.yaml: import.label_maps.{key} is missing (the {layout} layout needs it)"
            ) from e
        raise
    lic = cfg.licence
    own = layout in OWN_RECORDINGS  # the lab's own recordings: consent from the lab's table, never a licence
    report = write_rig(
        result,
        src,
        out,
        copy=cfg.copy_files,
        licence_terms="" if own else lic.terms,
        research_use=False if own else lic.research_use,
        redistribution=False if own else lic.redistribution,
        link=link,
    )
    if not report["takes"]:
        raise NothingImportedError(nothing_imported(layout, src, out, report))
    return report


class NothingImportedError(DatasetImportError):
    """The source yielded no take: the template or the maps do not describe it (exit 1, one line)."""


def nothing_imported(layout: str, src: Path, out: Path, report: dict) -> str:
    """One line: what was found instead of takes, with the first reason, and where the full list is."""
    items = report.get("excluded_items") or []
    first = f"; e.g. {items[0]['reason']}" if items else ""
    reasons = ", ".join(f"{k}: {v}" for k, v in report.get("excluded_by_reason", {}).items()) or "no file at all"
    key = "import.pattern.template" if layout in FPS_FROM_FILES else "the layout"
    return (
        f"{src}: nothing imported by the {layout} layout ({report.get('excluded', 0)} excluded: {reasons}{first}); "
        f"check {key}; every file and its reason: {out / IMPORT_REPORT}"
    )
