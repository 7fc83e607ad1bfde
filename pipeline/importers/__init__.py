"""Importers for the public dynamic-FER layouts, one module each, chosen by name.

`mvfer import <layout> SRC --out DIR` reads a dataset tree (never writing into it) and writes the
rig layout ingest reads. Each module has `scan(src, params.import, rig expressions) -> ImportResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.importers import afew, ckplus, dfew, ferv39k, mafw, oulu_casia, pattern
from pipeline.importers.common import DatasetImportError, ImportResult, check_source, write_rig
from pipeline.params import ImportParams


def _pattern(src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult:
    p = cfg.pattern
    return pattern.scan(src, p.template, p.maps, cfg.fps["pattern"], expressions, layout="pattern", frontal=p.frontal)


IMPORTERS: dict[str, Callable[[Path, ImportParams, list[str]], ImportResult]] = {
    oulu_casia.NAME: oulu_casia.scan, ckplus.NAME: ckplus.scan, dfew.NAME: dfew.scan,
    ferv39k.NAME: ferv39k.scan, mafw.NAME: mafw.scan, afew.NAME: afew.scan, "pattern": _pattern,
}


def get(layout: str) -> Callable[[Path, ImportParams, list[str]], ImportResult]:
    """The importer for a layout name; an unknown name lists the known ones."""
    try:
        return IMPORTERS[layout]
    except KeyError:
        raise DatasetImportError(f"unknown layout {layout!r}; known: {', '.join(sorted(IMPORTERS))}") from None


def run_import(layout: str, src: Path, out: Path, cfg: ImportParams, expressions: list[str]) -> dict:
    """Scan the source tree with the layout's importer and write the rig layout into `out`."""
    src, out = Path(src), Path(out)
    importer = get(layout)
    check_source(src, out)
    result = importer(src, cfg, expressions)
    lic = cfg.licence
    return write_rig(result, src, out, copy=cfg.copy_files, licence_terms=lic.terms, research_use=lic.research_use,
                     redistribution=lic.redistribution)
