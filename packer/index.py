"""`<out>/index.parquet`: one row per sample, enough to select samples and read any one of them
with a single ranged read, without opening a shard. Column list: docs/packing.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from packer import schema
from packer.atomic import atomic_path
from packer.store import OutputStore, open_store


def member_columns(name: str) -> tuple[str, str]:
    """Index columns with the data offset and size of modality `name`'s member."""
    return f"{name}_offset", f"{name}_size"


def checksum_column(name: str) -> str:
    """Index column with the xxh3_64 of a member's stored bytes (`name`: a modality, or "json")."""
    return f"{name}_xxh3"


INDEX_SCHEMA = pa.schema(
    [
        ("patch_id", pa.string()), ("split", pa.string()), ("domain", pa.string()), ("year", pa.int32()),
        ("roi", pa.string()), ("row", pa.int32()), ("col", pa.int32()),
        ("shard", pa.string()), ("sample_index", pa.int32()),
        ("offset", pa.int64()), ("size", pa.int64()),
        ("json_offset", pa.int64()), ("json_size", pa.int64()),
        *[(c, pa.int64()) for name in schema.MODALITY_NAMES for c in member_columns(name)],
        (checksum_column("json"), pa.uint64()),
        *[(checksum_column(name), pa.uint64()) for name in schema.MODALITY_NAMES],
        ("modalities", pa.list_(pa.string())),
        *[(f"T_{name}", pa.int32()) for name in schema.TIME_SERIES_MODALITIES],
        ("crs", pa.string()),
        ("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()), ("ymax", pa.float64()),
        ("cosia_counts", pa.list_(pa.int64())), ("lpis_l1_counts", pa.list_(pa.int64())),
        ("source_bytes", pa.int64()),
    ]
)


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts; missing member columns mean 'absent') -> a table with the fixed schema."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in INDEX_SCHEMA}
    return pa.table(cols, schema=INDEX_SCHEMA)


def write_index(out: str | os.PathLike, table: pa.Table) -> Path:
    """Write atomically (temp name, then rename) so a reader never sees half an index."""
    path = Path(out) / schema.INDEX_FILE
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_index(out: str | os.PathLike | OutputStore) -> pa.Table:
    """The index of a packed dataset (a local folder or an s3:// URL)."""
    with open_store(out, create=False).open(schema.INDEX_FILE) as f:
        return pq.read_table(f)
