"""The tile layer of a zonal run as a GeoPackage (`write_dataframe: True`), like the reference's
`<output_name>_slicing_job.gpkg`: one polygon per tile (core + margins) with its id and core box."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from inference.tiling import Tile, tile_bounds
from packer.atomic import atomic_path


# --------------------------------------------------------------------------------------------
def _polygon_wkb(left: float, bottom: float, right: float, top: float) -> bytes:
    ring = [(left, bottom), (left, top), (right, top), (right, bottom), (left, bottom)]
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<dd", x, y) for x, y in ring)


def write_tile_layer(path: Path, tiles: Sequence[Tile], areas: Any) -> Path:
    """A GeoPackage of the tiles (full extent with margins) with their ids and cores, for inspection."""
    import pyogrio.raw

    geoms = np.array([_polygon_wkb(*tile_bounds(t, areas.area_transform)) for t in tiles], dtype=object)
    fields = ["id", "row", "col", "core_x0", "core_x1", "core_y0", "core_y1"]
    data = [np.array([t.id for t in tiles], dtype=object),
            np.array([t.row for t in tiles]), np.array([t.col for t in tiles]),
            np.array([t.core_x[0] for t in tiles]), np.array([t.core_x[1] for t in tiles]),
            np.array([t.core_y[0] for t in tiles]), np.array([t.core_y[1] for t in tiles])]
    with atomic_path(path, keep_suffix=True) as tmp:  # GDAL wants a .gpkg name for a GeoPackage
        pyogrio.raw.write(str(tmp), geoms, data, fields, driver="GPKG", geometry_type="Polygon",
                          crs=areas.crs.to_wkt() if areas.crs else None, layer="tiles")
    return path
