"""A packed toy tree: bit-exact arrays, metadata, index offsets, manifest hashes, webdataset."""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
import rasterio
import webdataset as wds

from packer import schema
from packer.shardformat.encoding import decode_array
from packer.index import read_index
from packer.shardformat.columns import member_columns
from packer.inspection import read_sample
from packer.manifest import read_manifest
from packer.metadata import read_series_dates
from packer.pack import pack_dataset
from packer.verify import verify_dataset


@pytest.fixture(scope="module")
def packed(toy_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "shards"
    summary = pack_dataset(toy_tree.root, out, shard_size=3_000_000, workers=1, progress=False)
    return toy_tree, out, summary


@pytest.fixture(scope="module")
def packed_missing(toy_tree_missing, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed_missing") / "shards"
    pack_dataset(toy_tree_missing.root, out, shard_size=3_000_000, workers=1, progress=False)
    return toy_tree_missing, out


def test_every_member_is_the_rasterio_read(packed):
    tree, out, summary = packed
    index = read_index(out).to_pylist()
    assert sorted(r["patch_id"] for r in index) == sorted(tree.result.patch_ids)
    seen_dtypes = set()
    for row in index:
        members = read_sample(out, row)
        for mod in schema.MODALITY_NAMES:
            with rasterio.open(tree.result.path(row["patch_id"], mod)) as src:
                expected = src.read()
            got = decode_array(members[schema.member_name(row["patch_id"], mod)])
            assert got.dtype == expected.dtype and got.shape == expected.shape, mod
            assert got.tobytes() == expected.tobytes(), (row["patch_id"], mod)
            seen_dtypes.add(str(got.dtype))
    assert seen_dtypes == {"uint8", "uint16", "float32"}
    assert summary.patches == 12 and summary.shards > 3


def test_sample_json_and_index_metadata(packed):
    tree, out, _ = packed
    s2_dates = read_series_dates(tree.root / schema.GLOBAL_MTD_FOLDER, "SENTINEL2_TS")
    for row in read_index(out).to_pylist():
        pid = row["patch_id"]
        meta = json.loads(read_sample(out, row)[schema.meta_member_name(pid)])
        assert meta["split"] == row["split"] == tree.result.splits[pid]
        assert meta["modalities"]["SENTINEL2_TS"]["dates"] == list(s2_dates[pid])
        assert meta["modalities"]["SENTINEL2_MSK-SC"]["dates"] == list(s2_dates[pid])
        for series, t in tree.result.n_dates[pid].items():
            assert row[f"T_{series}"] == t
        with rasterio.open(tree.result.path(pid, "AERIAL_RGBI")) as src:
            assert meta["modalities"]["AERIAL_RGBI"]["bounds"] == list(src.bounds)
            assert [row["xmin"], row["ymin"], row["xmax"], row["ymax"]] == list(src.bounds)
            assert list(src.transform)[:6] == meta["modalities"]["AERIAL_RGBI"]["transform"]
        assert row["crs"] == meta["crs"] == "EPSG:2154"
        assert meta["modalities"]["DEM_ELEV"]["path"] == str(schema.PatchId.parse(pid).relative_path("DEM_ELEV"))
        with rasterio.open(tree.result.path(pid, "AERIAL_LABEL-COSIA")) as src:
            assert row["cosia_counts"] == np.bincount(src.read(1).ravel(), minlength=19).tolist()
        with rasterio.open(tree.result.path(pid, "ALL_LABEL-LPIS")) as src:
            assert row["lpis_l1_counts"] == np.bincount(src.read(1).ravel(), minlength=23).tolist()


def test_index_offsets_are_ranged_reads_of_the_members(packed):
    _, out, _ = packed
    for row in read_index(out).to_pylist():
        with open(out / row["shard"], "rb") as f:
            tar_members = {m.name: (m.offset_data, m.size) for m in tarfile.open(fileobj=f, mode="r:")}
            for mod in row["modalities"]:
                off, size = row[member_columns(mod)[0]], row[member_columns(mod)[1]]
                assert tar_members[schema.member_name(row["patch_id"], mod)] == (off, size)
                f.seek(off)
                decode_array(f.read(size))  # one ranged read is a whole member
            f.seek(row["json_offset"])
            assert json.loads(f.read(row["json_size"]))["patch_id"] == row["patch_id"]
            f.seek(row["offset"])
            names = tarfile.open(fileobj=io.BytesIO(f.read(row["size"]))).getnames()
            assert names[0] == schema.meta_member_name(row["patch_id"]) and len(names) == 1 + len(row["modalities"])


def test_manifest_hashes_sizes_and_counts(packed):
    _, out, summary = packed
    m = read_manifest(out)
    index = read_index(out)
    assert m["format_version"] == schema.FORMAT_VERSION
    assert sum(s["samples"] for s in m["shards"]) == index.num_rows == m["index"]["rows"]
    for s in m["shards"]:
        data = (out / s["path"]).read_bytes()
        assert len(data) == s["bytes"] and hashlib.sha256(data).hexdigest() == s["sha256"]
        assert s["bytes"] <= 3_000_000 or s["samples"] == 1  # size target respected
    assert {k: v["samples"] for k, v in m["splits"].items()} == summary.splits
    assert not list(out.rglob("*.partial"))
    assert verify_dataset(out).ok


def test_webdataset_iterates_the_shards(packed):
    tree, out, _ = packed
    urls = [str(out / s["path"]) for s in read_manifest(out)["shards"]]
    keys = []
    for sample in wds.WebDataset(urls, shardshuffle=False):
        keys.append(sample["__key__"])
        assert json.loads(sample["json"])["patch_id"] == sample["__key__"]
        for mod in schema.MODALITY_NAMES:
            assert decode_array(sample[schema.wds_member_key(mod)]).ndim == 3
    assert sorted(keys) == sorted(tree.result.patch_ids)


def test_missing_modalities_are_packed_and_listed(packed_missing):
    tree, out = packed_missing
    rows = read_index(out).to_pylist()
    assert sorted(r["patch_id"] for r in rows) == sorted(tree.result.patch_ids)
    assert any(len(r["modalities"]) < len(schema.MODALITY_NAMES) for r in rows)
    for row in rows:
        assert set(row["modalities"]) == set(tree.result.modalities[row["patch_id"]])
        for mod in schema.MODALITY_NAMES:
            present = mod in row["modalities"]
            assert (row[member_columns(mod)[0]] is not None) == present
            if mod in schema.TIME_SERIES_MODALITIES:
                assert (row[f"T_{mod}"] is not None) == present
        members = read_sample(out, row)
        assert len(members) == 1 + len(row["modalities"])
    assert verify_dataset(out).ok


def test_modality_subset(toy_tree, tmp_path):
    mods = ("AERIAL_RGBI", "SENTINEL2_TS", "AERIAL_LABEL-COSIA")
    pack_dataset(toy_tree.root, tmp_path / "o", modalities=mods, workers=1, progress=False)
    rows = read_index(tmp_path / "o").to_pylist()
    assert len(rows) == 12 and all(r["modalities"] == list(mods) for r in rows)
    assert all(r["lpis_l1_counts"] is None and r["T_SENTINEL1-ASC_TS"] is None for r in rows)
    assert list(read_manifest(tmp_path / "o")["modalities"]) == sorted(mods)
