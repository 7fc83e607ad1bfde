"""Croissant 1.0 metadata (MLCommons) for a release, with the Responsible-AI (RAI) fields the
pipeline knows. File objects carry sha256; record sets describe takes, labels and splits so a
Croissant loader (`mlcroissant`) yields the same rows as the CSV files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
_TYPES = {
    "int64": "sc:Integer",
    "Int64": "sc:Integer",
    "float64": "sc:Float",
    "Float64": "sc:Float",
    "bool": "sc:Boolean",
}


def _fields(record_set: str, file_id: str, df: pd.DataFrame, descriptions: dict[str, str]) -> list[dict]:
    out = []
    for col in df.columns:
        out.append(
            {
                "@type": "cr:Field",
                "@id": f"{record_set}/{col}",
                "name": col,
                "description": descriptions.get(col, col.replace("_", " ")),
                "dataType": _TYPES.get(str(df[col].dtype), "sc:Text"),
                "source": {"fileObject": {"@id": file_id}, "extract": {"column": col}},
            }
        )
    return out


def croissant(meta: dict, files: dict[str, tuple[str, str, pd.DataFrame]], rai: dict[str, object]) -> dict:
    """The JSON-LD document. files: record-set name -> (path in the release, sha256, table)."""
    distribution, record_sets = [], []
    for name, (rel, digest, df) in files.items():
        fid = Path(rel).name
        distribution.append(
            {
                "@type": "cr:FileObject",
                "@id": fid,
                "name": fid,
                "contentUrl": rel,
                "encodingFormat": "text/csv",
                "sha256": digest,
                "description": meta["file_descriptions"].get(name, name),
            }
        )
        record_sets.append(
            {
                "@type": "cr:RecordSet",
                "@id": name,
                "name": name,
                "description": meta["record_descriptions"].get(name, name),
                "field": _fields(name, fid, df, meta.get("field_descriptions", {})),
            }
        )
    doc = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": meta["name"],
        "description": meta["description"],
        "version": meta["version"],
        "datePublished": meta["date"],
        "license": meta["license_url"],
        "url": meta["url"],
        "citeAs": meta["cite_as"],
        "creator": {"@type": "sc:Organization", "name": meta["creator"]},
        "keywords": meta["keywords"],
        "isLiveDataset": False,
        "distribution": distribution,
        "recordSet": record_sets,
    }
    doc |= {f"rai:{k}": v for k, v in rai.items()}
    return doc
