"""GLOBAL_ALL_MTD GeoPackages: acquisition dates per patch and the official split file.

Read with pyogrio into Arrow without geometry (we only need attributes; 241 k rows per file). The
files may lie in a folder or inside a zip (`MetadataFiles` hides which): a zipped GeoPackage is
read whole into memory once and handed to pyogrio as bytes, nothing is extracted to disk.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyogrio

from packer import schema
from packer.errors import PackError

_DATE_RE = re.compile(r"^\d{8}$")


class MetadataFiles:
    """The GeoPackages of GLOBAL_ALL_MTD by file name: where each is (for messages) and how to read it.

    `files` maps a name to (where, source): `source()` gives what pyogrio opens, a path or the bytes.
    `label` says where a missing file was looked for.
    """

    def __init__(self, label: str, files: dict[str, tuple[str, Callable[[], str | bytes]]]):
        self.label = label
        self.files = files

    @classmethod
    def folder(cls, path: str | os.PathLike) -> "MetadataFiles":
        path = Path(path)
        found = sorted(f for f in path.iterdir() if f.suffix == ".gpkg" and f.is_file()) if path.is_dir() else []
        return cls(str(path), {f.name: (str(f), lambda f=f: str(f)) for f in found})

    def has(self, name: str) -> bool:
        return name in self.files

    def where(self, name: str) -> str:
        return self.files[name][0] if name in self.files else f"{self.label}/{name}"

    def source(self, name: str) -> str | bytes:
        return self.files[name][1]()


def _as_files(mtd: "str | os.PathLike | MetadataFiles") -> MetadataFiles:
    return mtd if isinstance(mtd, MetadataFiles) else MetadataFiles.folder(mtd)


def _fields(source: str | bytes, where: str) -> list[str]:
    try:
        with warnings.catch_warnings():  # bytes go through an extension-less /vsimem file: GDAL remarks on it
            warnings.filterwarnings("ignore", message=".*non conformant file extension.*")
            return list(pyogrio.read_info(source)["fields"])
    except Exception as exc:  # pyogrio raises several DataSource errors; all mean "unreadable"
        raise PackError(where, f"cannot read GeoPackage ({exc})") from None


def _read_table(mtd: MetadataFiles, name: str, columns: list[str]) -> pa.Table:
    """Attribute columns of the first layer of a GeoPackage (no geometry)."""
    where, source = mtd.where(name), mtd.source(name)
    fields = _fields(source, where)
    missing = [c for c in columns if c not in fields]
    if missing:
        raise PackError(where, f"missing column(s) {missing}; has {fields}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non conformant file extension.*")
        _, table = pyogrio.read_arrow(source, columns=columns, read_geometry=False)
    return table


def _read_columns(mtd: MetadataFiles, name: str, columns: list[str]) -> dict[str, list]:
    table = _read_table(mtd, name, columns)
    return {c: table.column(c).to_pylist() for c in columns}


def parse_acquisition_dates(text: object, where: str) -> list[str]:
    """`{"1": "YYYYMMDD", ...}` -> dates in band order (keys are 1-based and consecutive)."""
    try:
        obj = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise PackError(where, f"acquisition_dates is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise PackError(where, f"acquisition_dates must be a JSON object, got {type(obj).__name__}")
    try:
        keys = sorted(obj, key=int)
    except ValueError:
        raise PackError(where, f"acquisition_dates keys must be 1-based integers, got {list(obj)[:5]}") from None
    if [int(k) for k in keys] != list(range(1, len(keys) + 1)):
        raise PackError(where, "acquisition_dates keys must be consecutive from 1")
    dates = [obj[k] for k in keys]
    bad = [d for d in dates if not isinstance(d, str) or not _DATE_RE.match(d)]
    if bad:
        raise PackError(where, f"acquisition_dates values must be 'YYYYMMDD' strings, got {bad[:3]}")
    return dates


def read_series_dates(mtd_dir: "str | os.PathLike | MetadataFiles", modality_name: str) -> dict[str, tuple[str, ...]]:
    """patch_id -> dates of the series `modality_name` uses (the S2 mask reads S2's file).

    All patches of an ROI share one dates string: each distinct string is parsed once and its
    tuple shared, which keeps 241 k patches x ~90 dates x 3 series at a few MB instead of GBs.
    """
    mtd = _as_files(mtd_dir)
    name = schema.modality(modality_name).dates_file  # the S2 mask's is S2's
    path = mtd.where(name)
    if not mtd.has(name):
        raise PackError(path, f"metadata file missing: it holds the dates of {modality_name} "
                              f"(pack without that modality with --modalities, or restore the file)")
    table = _read_table(mtd, name, ["patch_id", schema.ACQUISITION_DATES_COLUMN])
    encoded = table.column(schema.ACQUISITION_DATES_COLUMN).combine_chunks().dictionary_encode()
    parsed = [tuple(parse_acquisition_dates(text, f"{path} (dates {text[:40]!r}...)"))
              for text in encoded.dictionary.to_pylist()]
    out: dict[str, tuple[str, ...]] = {}
    for pid, code in zip(table.column("patch_id").to_pylist(), encoded.indices.to_pylist()):
        if pid is not None and code is not None:
            out[pid] = parsed[code]
    return out


def read_single_dates(mtd_dir: "str | os.PathLike | MetadataFiles", modality_name: str) -> dict[str, str]:
    """patch_id -> acquisition date of a mono-temporal image; {} when the optional file is absent."""
    mtd = _as_files(mtd_dir)
    name = schema.modality(modality_name).dates_file
    if not mtd.has(name):
        return {}
    cols = _read_columns(mtd, name, ["patch_id", schema.SINGLE_DATE_COLUMN])
    return {p: str(d) for p, d in zip(cols["patch_id"], cols[schema.SINGLE_DATE_COLUMN]) if p and d}


def read_split_gpkg(mtd_dir: "str | os.PathLike | MetadataFiles", column: str | None) -> tuple[dict[str, str], str] | None:
    """patch_id -> split from GLOBAL_ALL_MTD_SPLIT.gpkg, or None when the file is absent.

    `column=None` takes the first known split column present (`split_1`, the official split, first).
    """
    mtd = _as_files(mtd_dir)
    name = schema.SPLIT_FILE
    path = mtd.where(name)
    if not mtd.has(name):
        if column is not None:
            raise PackError(path, f"--split-column {column} was given but the split file is missing")
        return None
    source = mtd.source(name)  # once: a zipped file is fetched once for its fields and its columns
    mtd = MetadataFiles(mtd.label, {name: (path, lambda: source)})
    if column is None:
        fields = _fields(source, path)
        known = [c for c in schema.SPLIT_COLUMNS if c in fields]
        if not known:
            raise PackError(path, f"no split column among {fields}; choose one with --split-column")
        column = known[0]
    cols = _read_columns(mtd, name, ["patch_id", column])
    return {p: s for p, s in zip(cols["patch_id"], cols[column]) if p and s}, column
