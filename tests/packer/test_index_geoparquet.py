"""index.parquet is GeoParquet: read by geopandas (CRS, bounds, footprints) and pyarrow (the spec's
`geo` metadata), with the class tables in the file metadata; merge rebuilds both."""

from __future__ import annotations

import json
import struct

import geopandas
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely

from packer import schema
from packer.index import CLASSES_METADATA_KEY, GEOPARQUET_VERSION, footprint_wkb, read_index
from packer.merge import merge_parts
from packer.pack import pack_dataset


def test_geopandas_opens_the_index_as_a_layer_of_footprints(toy_shards):
    gdf = geopandas.read_parquet(toy_shards.out / schema.INDEX_FILE)
    table = read_index(toy_shards.out)
    assert gdf.crs is not None and gdf.crs.to_epsg() == schema.CRS_EPSG
    assert list(gdf["patch_id"]) == table.column("patch_id").to_pylist()
    assert list(gdf.total_bounds) == pytest.approx([min(table.column("xmin").to_pylist()),
                                                    min(table.column("ymin").to_pylist()),
                                                    max(table.column("xmax").to_pylist()),
                                                    max(table.column("ymax").to_pylist())])
    # Each footprint is its row's 102.4 m square, and the attributes come along.
    assert np.allclose(gdf.geometry.area, schema.PATCH_METERS ** 2)
    assert np.allclose(gdf.geometry.bounds[["minx", "miny", "maxx", "maxy"]].to_numpy(),
                       gdf[["xmin", "ymin", "xmax", "ymax"]].to_numpy())
    assert gdf.geometry.is_valid.all() and (gdf.geometry.exterior.is_ccw).all()
    assert {"split", "shard", "cosia_counts", "AERIAL_RGBI_offset"} <= set(gdf.columns)


def test_geo_metadata_follows_the_geoparquet_spec(toy_shards):
    meta = pq.read_schema(toy_shards.out / schema.INDEX_FILE).metadata
    geo = json.loads(meta[b"geo"])
    assert geo["version"] == GEOPARQUET_VERSION == "1.1.0"
    assert geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
    assert col["crs"]["id"] == {"authority": "EPSG", "code": 2154} and col["crs"]["type"] == "ProjectedCRS"
    assert "$schema" in col["crs"]  # PROJJSON
    table = read_index(toy_shards.out)
    assert col["bbox"] == [min(table.column("xmin").to_pylist()), min(table.column("ymin").to_pylist()),
                           max(table.column("xmax").to_pylist()), max(table.column("ymax").to_pylist())]
    assert table.schema.field("geometry").type == "binary"
    # The class names of the count columns travel with the file.
    classes = json.loads(meta[CLASSES_METADATA_KEY])
    assert classes["cosia_counts"]["task"] == "AERIAL_LABEL-COSIA"
    assert [c["name"] for c in classes["cosia_counts"]["classes"]] == [c.name for c in schema.COSIA_CLASSES]
    assert classes["lpis_l1_counts"]["classes"][22] == {"value": 22, "name": "Background", "color": "#000000"}


def test_footprint_wkb_is_iso_wkb():
    wkb = footprint_wkb(1.0, 2.0, 3.0, 5.0)
    order, kind, rings, points = struct.unpack_from("<BIII", wkb)
    assert (order, kind, rings, points) == (1, 3, 1, 5)
    coords = struct.unpack_from("<10d", wkb, 13)
    assert coords == (1.0, 2.0, 3.0, 2.0, 3.0, 5.0, 1.0, 5.0, 1.0, 2.0)
    assert shapely.from_wkb(wkb).equals(shapely.box(1.0, 2.0, 3.0, 5.0))


def test_merge_rebuilds_the_geo_metadata(toy_tree, tmp_path):
    parts = []
    for k in range(2):
        out = tmp_path / f"part-{k}"
        pack_dataset(toy_tree.root, out, num_parts=2, part=k, workers=1, progress=False, shard_size=5_000_000)
        parts.append(out)
    bboxes = [json.loads(pq.read_schema(p / schema.INDEX_FILE).metadata[b"geo"])["columns"]["geometry"]["bbox"]
              for p in parts]
    merged = merge_parts(tmp_path / "all", parts)
    geo = json.loads(pq.read_schema(tmp_path / "all" / schema.INDEX_FILE).metadata[b"geo"])
    union = [min(b[0] for b in bboxes), min(b[1] for b in bboxes), max(b[2] for b in bboxes), max(b[3] for b in bboxes)]
    assert geo["columns"]["geometry"]["bbox"] == union
    gdf = geopandas.read_parquet(tmp_path / "all" / schema.INDEX_FILE)
    assert len(gdf) == merged["index"]["rows"] and gdf.crs.to_epsg() == 2154
    assert list(gdf.total_bounds) == pytest.approx(union)
