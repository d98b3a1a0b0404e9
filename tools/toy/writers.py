"""Output of a toy tree: patch GeoTIFFs, GLOBAL_ALL_MTD GeoPackages and the official split CSVs.

Every file goes to a hidden temp name in its final folder and is renamed when complete, so a reader
never sees half a file. GeoPackages embed a "last change" timestamp; we pin it with GDAL's
`OGR_CURRENT_DATE` so the same seed gives byte-identical GeoPackages.
"""

from __future__ import annotations

import csv
import io
import json
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyogrio
import rasterio
from pyogrio.raw import write as ogr_write
from rasterio.crs import CRS
from rasterio.transform import Affine

from packer.atomic import atomic_path
from packer.schema import (
    ACQUISITION_DATES_COLUMN,
    CRS_EPSG,
    GEOM_FILE,
    GLOBAL_MTD_FOLDER,
    MODALITIES,
    PATCH_METERS,
    SENTINEL_DATES_FILES,
    SINGLE_DATE_COLUMN,
    SINGLE_DATE_FILES,
    SPLIT_CSV_COLUMNS,
    SPLIT_CSV_NAMES,
    SPLIT_FILE,
    SPLITS,
)

from .plan import PatchPlan

FIXED_GPKG_TIMESTAMP = "2000-01-01T00:00:00Z"
SPLIT_COLUMN = "split_1"
_CRS = CRS.from_epsg(CRS_EPSG)
TILE_PX = 256


def write_geotiff(path: Path, array: np.ndarray, origin: tuple[float, float], modality_name: str,
                  compress: str | None = None, tiled: bool = False) -> None:
    """One patch file: GTiff (striped, or tiled 256x256 when `tiled` and the raster is that big),
    EPSG:2154, `Affine(gsd, 0, x0, 0, -gsd, y0)`."""
    mod = MODALITIES[modality_name]
    if array.shape[1:] != mod.shape_hw or array.dtype != mod.np_dtype:
        raise ValueError(f"{path}: array {array.shape} {array.dtype} does not fit {modality_name} "
                         f"({mod.shape_hw} {mod.dtype})")
    profile = dict(
        driver="GTiff", width=mod.size_px, height=mod.size_px, count=array.shape[0], dtype=mod.dtype,
        crs=_CRS, transform=Affine(mod.gsd_m, 0.0, origin[0], 0.0, -mod.gsd_m, origin[1]),
    )
    if compress:
        profile["compress"] = compress
    if tiled and mod.size_px >= TILE_PX:
        profile.update(tiled=True, blockxsize=TILE_PX, blockysize=TILE_PX)
    with atomic_path(path, keep_suffix=True) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(array)


def patch_polygon_wkb(origin: tuple[float, float]) -> bytes:
    """WKB of the patch square (no shapely needed): little-endian Polygon, one closed ring."""
    x0, y0 = origin
    x1, y1 = x0 + PATCH_METERS, y0 - PATCH_METERS
    ring = ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))
    return struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(ring)) + b"".join(struct.pack("<dd", *p) for p in ring)


@contextmanager
def _pinned_gpkg_clock() -> Iterator[None]:
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_GPKG_TIMESTAMP})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


def write_gpkg(path: Path, plans: Sequence[PatchPlan], columns: dict[str, list[str]]) -> None:
    """A GLOBAL_ALL_MTD GeoPackage: `patch_id`, string `columns`, patch polygon (EPSG:2154)."""
    geometry = np.array([patch_polygon_wkb(p.origin) for p in plans], dtype=object)
    names = ["patch_id", *columns]
    data = [np.array([p.patch_id for p in plans], dtype=object),
            *(np.array(v, dtype=object) for v in columns.values())]
    with _pinned_gpkg_clock(), atomic_path(path, keep_suffix=True) as tmp:
        ogr_write(str(tmp), geometry=geometry, field_data=data, fields=names, crs=f"EPSG:{CRS_EPSG}",
                  geometry_type="Polygon", driver="GPKG", layer=path.stem)


def write_global_mtd(out: Path, plans: Sequence[PatchPlan]) -> list[Path]:
    """All GLOBAL_ALL_MTD files; a dates file lists only the patches that have that modality.

    The split file holds `split_1` only (the official split); GEOM holds every patch's square.
    """
    folder = out / GLOBAL_MTD_FOLDER
    written = []
    for series, fname in SENTINEL_DATES_FILES.items():
        rows = [p for p in plans if series in p.modalities]
        dates = [json.dumps({str(i + 1): d for i, d in enumerate(p.roi.series_dates[series])}) for p in rows]
        write_gpkg(folder / fname, rows, {ACQUISITION_DATES_COLUMN: dates})
        written.append(folder / fname)
    single = {"AERIAL_RGBI": lambda p: p.roi.aerial_date, "AERIAL-RLT_PAN": lambda p: p.roi.historical_date,
              "SPOT_RGBI": lambda p: p.roi.spot_date}
    for mod, fname in SINGLE_DATE_FILES.items():
        rows = [p for p in plans if mod in p.modalities]
        write_gpkg(folder / fname, rows, {SINGLE_DATE_COLUMN: [single[mod](p) for p in rows]})
        written.append(folder / fname)
    write_gpkg(folder / SPLIT_FILE, plans, {SPLIT_COLUMN: [p.split for p in plans]})
    write_gpkg(folder / GEOM_FILE, plans, {})
    written += [folder / SPLIT_FILE, folder / GEOM_FILE]
    return written


def write_split_csvs(out: Path, plans: Sequence[PatchPlan]) -> dict[str, Path]:
    """`FLAIR-HUB_TOY-DATASET_{TRAIN,VALID,TEST}.csv` in `<out>/`, official header and `../` paths.

    A split with no patch still gets its CSV (header only), so consumers can rely on all three.
    """
    paths = {}
    for split in SPLITS:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(SPLIT_CSV_COLUMNS)
        for p in plans:
            if p.split == split:
                writer.writerow([p.patch_id, *(p.pid.csv_path(m) if m in p.modalities else ""
                                               for m in SPLIT_CSV_COLUMNS[1:])])
        final = out / SPLIT_CSV_NAMES[split]
        with atomic_path(final, keep_suffix=True) as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")
        paths[split] = final
    return paths
