"""`<out>/index.parquet`: one row per sample, enough to select samples and read any one of them
with a single ranged read, without opening a shard. Column list: docs/packing.md.

It is also a GeoParquet file (https://geoparquet.org, version `GEOPARQUET_VERSION`): a `geometry`
column holds each patch's footprint as a WKB polygon and the `geo` file metadata says so (CRS as
PROJJSON, bbox), so QGIS, geopandas, GDAL and duckdb-spatial open the index as a layer of patches
with all their attributes. The class tables of the count columns travel in the file metadata too
(`CLASSES_METADATA_KEY`), so `cosia_counts[i]` can be named without this package. The columns
themselves (names, types, order) are `packer.shardformat.columns`.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from packer import schema
from packer.atomic import atomic_path
from packer.paths import check_index
from packer.shardformat.columns import COUNT_COLUMN_TASKS, GEOMETRY_COLUMN, INDEX_SCHEMA
from packer.storage.write import OutputStore, open_store

GEOPARQUET_VERSION = "1.1.0"
CLASSES_METADATA_KEY = b"flair_stream:classes"
"""File metadata key: JSON {count column: {"task", "classes": [{"value", "name", "color"}, ...]}}."""


def footprint_wkb(xmin: float, ymin: float, xmax: float, ymax: float) -> bytes:
    """The rectangle as an ISO WKB polygon (little endian, one ring, counter-clockwise, closed).

    Written by hand rather than with shapely: five points are all it takes, and the packer then
    needs no geometry library.
    """
    ring = (xmin, ymin, xmax, ymin, xmax, ymax, xmin, ymax, xmin, ymin)
    return struct.pack("<BIII10d", 1, 3, 1, 5, *ring)


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts; missing member columns mean 'absent') -> a table with the fixed schema."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in INDEX_SCHEMA}
    cols[GEOMETRY_COLUMN] = [
        footprint_wkb(r["xmin"], r["ymin"], r["xmax"], r["ymax"]) if r.get("xmin") is not None else None for r in rows
    ]
    return pa.table(cols, schema=INDEX_SCHEMA)


def _projjson(crs_text: str) -> dict:
    """PROJJSON of an index `crs` value (`EPSG:2154` or WKT), as GeoParquet wants it."""
    from rasterio.crs import CRS  # the packer's GDAL binding; imported only when an index is written

    return CRS.from_user_input(crs_text).to_dict(projjson=True)


def geo_metadata(table: pa.Table) -> dict:
    """The GeoParquet `geo` metadata of an index table (computed from its rows).

    One CRS for the column (FLAIR-HUB is all EPSG:2154); an index mixing CRSs gets `crs: null`
    ("unknown" in the spec), never a wrong one (an absent key would mean OGC:CRS84).
    """
    crs_values = {c for c in table.column("crs").to_pylist() if c is not None}
    column: dict = {"encoding": "WKB", "geometry_types": ["Polygon"] if table.num_rows else [],
                    "crs": _projjson(crs_values.pop()) if len(crs_values) == 1 else None,
                    "orientation": "counterclockwise", "edges": "planar"}
    if table.num_rows and table.column("xmin").null_count == 0:
        column["bbox"] = [pc.min(table.column("xmin")).as_py(), pc.min(table.column("ymin")).as_py(),
                          pc.max(table.column("xmax")).as_py(), pc.max(table.column("ymax")).as_py()]
    return {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY_COLUMN, "columns": {GEOMETRY_COLUMN: column}}


def class_metadata() -> dict:
    """The class table behind each count column (names and official colours, from packer.schema)."""
    return {col: {"task": task, "classes": [{"value": c.value, "name": c.name, "color": c.color}
                                            for c in schema.CLASS_TABLES[task]]}
            for col, task in COUNT_COLUMN_TASKS.items()}


def with_file_metadata(table: pa.Table) -> pa.Table:
    """`table` with the `geo` and class-table metadata rebuilt from its rows (after a merge, too)."""
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = json.dumps(geo_metadata(table), sort_keys=True).encode()
    meta[CLASSES_METADATA_KEY] = json.dumps(class_metadata(), sort_keys=True).encode()
    return table.replace_schema_metadata(meta)


def write_index(out: str | os.PathLike, table: pa.Table) -> Path:
    """Write atomically (temp name, then rename) so a reader never sees half an index."""
    path = Path(out) / schema.INDEX_FILE
    with atomic_path(path) as tmp:
        pq.write_table(with_file_metadata(table), tmp, compression="zstd")
    return path


def read_index(out: str | os.PathLike | OutputStore) -> pa.Table:
    """The index of a packed dataset (a local folder or an s3:// URL)."""
    store = open_store(out, create=False)
    with store.open(schema.INDEX_FILE) as f:
        return check_index(pq.read_table(f), f"{store}/{schema.INDEX_FILE}")
