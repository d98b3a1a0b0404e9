"""The columns of `index.parquet`: their names and Arrow types, for the packer that writes them and
every reader that selects by them (docs/packing.md, "Index columns").

One row per sample: where it is (`shard`, `sample_index`, the whole sample's `offset`/`size` span),
where each member's data lies (`<name>_offset`, `<name>_size`) and the xxh3_64 of its stored bytes
(`<name>_xxh3`), `<name>` being `json` or a modality; the number of dates of each series
(`T_<series>`); per-class pixel counts of the labels; the footprint; the source bytes packed.
The file itself (GeoParquet metadata, atomic write, reading) is `packer.index`.
"""

from __future__ import annotations

import pyarrow as pa

from packer import schema
from packer.shardformat.names import META_SUFFIX

SAMPLE_SPAN = ("offset", "size")
"""The whole sample's bytes in its shard (a small valid tar: one ranged read gives every member)."""
COUNT_COLUMNS = {"AERIAL_LABEL-COSIA": "cosia_counts", "ALL_LABEL-LPIS": "lpis_l1_counts"}
"""Per-class pixel counts of each label, by task (LPIS: band 1 = level 1)."""
COUNT_COLUMN_TASKS = {column: task for task, column in COUNT_COLUMNS.items()}
"""The per-class pixel count columns and the class table each one follows."""
GEOMETRY_COLUMN = "geometry"
"""The footprint as a WKB polygon (GeoParquet's primary column)."""


def member_columns(name: str) -> tuple[str, str]:
    """Index columns with the data offset and size of a member (`name`: a modality, or "json")."""
    return f"{name}_offset", f"{name}_size"


def checksum_column(name: str) -> str:
    """Index column with the xxh3_64 of a member's stored bytes (`name`: a modality, or "json")."""
    return f"{name}_xxh3"


def dates_column(series: str) -> str:
    """Index column with the number of dates of a time series member (null where absent)."""
    return f"T_{series}"


INDEX_SCHEMA = pa.schema(
    [
        ("patch_id", pa.string()), ("split", pa.string()), ("domain", pa.string()), ("year", pa.int32()),
        ("roi", pa.string()), ("row", pa.int32()), ("col", pa.int32()),
        ("shard", pa.string()), ("sample_index", pa.int32()),
        *[(c, pa.int64()) for c in SAMPLE_SPAN],
        *[(c, pa.int64()) for c in member_columns(META_SUFFIX)],
        *[(c, pa.int64()) for name in schema.MODALITY_NAMES for c in member_columns(name)],
        (checksum_column(META_SUFFIX), pa.uint64()),
        *[(checksum_column(name), pa.uint64()) for name in schema.MODALITY_NAMES],
        ("modalities", pa.list_(pa.string())),
        *[(dates_column(name), pa.int32()) for name in schema.TIME_SERIES_MODALITIES],
        ("crs", pa.string()),
        ("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()), ("ymax", pa.float64()),
        *[(c, pa.list_(pa.int64())) for c in COUNT_COLUMNS.values()],
        ("source_bytes", pa.int64()),
        (GEOMETRY_COLUMN, pa.binary()),
    ]
)
"""Every index column in file order (a member's columns are null where the sample lacks it)."""
