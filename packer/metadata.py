"""GLOBAL_ALL_MTD GeoPackages: acquisition dates per patch and the official split file.

Read with pyogrio into Arrow without geometry (we only need attributes; 241 k rows per file).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyogrio

from packer import schema
from packer.errors import PackError

_DATE_RE = re.compile(r"^\d{8}$")


def _read_table(path: Path, columns: list[str]) -> pa.Table:
    """Attribute columns of the first layer of a GeoPackage (no geometry)."""
    try:
        info = pyogrio.read_info(path)
        fields = list(info["fields"])
    except Exception as exc:  # pyogrio raises several DataSource errors; all mean "unreadable"
        raise PackError(path, f"cannot read GeoPackage ({exc})") from None
    missing = [c for c in columns if c not in fields]
    if missing:
        raise PackError(path, f"missing column(s) {missing}; has {fields}")
    _, table = pyogrio.read_arrow(path, columns=columns, read_geometry=False)
    return table


def _read_columns(path: Path, columns: list[str]) -> dict[str, list]:
    table = _read_table(path, columns)
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


def read_series_dates(mtd_dir: Path, modality_name: str) -> dict[str, tuple[str, ...]]:
    """patch_id -> dates of the series `modality_name` uses (the S2 mask reads S2's file).

    All patches of an ROI share one dates string: each distinct string is parsed once and its
    tuple shared, which keeps 241 k patches x ~90 dates x 3 series at a few MB instead of GBs.
    """
    path = mtd_dir / schema.SENTINEL_DATES_FILES[schema.dates_key(modality_name)]
    if not path.is_file():
        raise PackError(path, f"metadata file missing: it holds the dates of {modality_name} "
                              f"(pack without that modality with --modalities, or restore the file)")
    table = _read_table(path, ["patch_id", schema.ACQUISITION_DATES_COLUMN])
    encoded = table.column(schema.ACQUISITION_DATES_COLUMN).combine_chunks().dictionary_encode()
    parsed = [tuple(parse_acquisition_dates(text, f"{path} (dates {text[:40]!r}...)"))
              for text in encoded.dictionary.to_pylist()]
    out: dict[str, tuple[str, ...]] = {}
    for pid, code in zip(table.column("patch_id").to_pylist(), encoded.indices.to_pylist()):
        if pid is not None and code is not None:
            out[pid] = parsed[code]
    return out


def read_single_dates(mtd_dir: Path, modality_name: str) -> dict[str, str]:
    """patch_id -> acquisition date of a mono-temporal image; {} when the optional file is absent."""
    path = mtd_dir / schema.SINGLE_DATE_FILES[modality_name]
    if not path.is_file():
        return {}
    cols = _read_columns(path, ["patch_id", schema.SINGLE_DATE_COLUMN])
    return {p: str(d) for p, d in zip(cols["patch_id"], cols[schema.SINGLE_DATE_COLUMN]) if p and d}


def read_split_gpkg(mtd_dir: Path, column: str | None) -> tuple[dict[str, str], str] | None:
    """patch_id -> split from GLOBAL_ALL_MTD_SPLIT.gpkg, or None when the file is absent.

    `column=None` takes the first known split column present (`split_1`, the official split, first).
    """
    path = mtd_dir / schema.SPLIT_FILE
    if not path.is_file():
        if column is not None:
            raise PackError(path, f"--split-column {column} was given but the split file is missing")
        return None
    try:
        fields = list(pyogrio.read_info(path)["fields"])
    except Exception as exc:
        raise PackError(path, f"cannot read GeoPackage ({exc})") from None
    if column is None:
        known = [c for c in schema.SPLIT_COLUMNS if c in fields]
        if not known:
            raise PackError(path, f"no split column among {fields}; choose one with --split-column")
        column = known[0]
    cols = _read_columns(path, ["patch_id", column])
    return {p: s for p, s in zip(cols["patch_id"], cols[column]) if p and s}, column
