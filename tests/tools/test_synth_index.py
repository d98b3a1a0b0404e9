"""The full-size synthetic index: real grammar, real split sizes, a tar layout the packer would write."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from packer import schema
from packer.shardformat.columns import INDEX_SCHEMA, member_columns
from packer.shardformat.writer import member_header
from tools.synth_index import SizeModel, TOY_RATIOS, generate, raw_npy_bytes
from trainer.data.catalog import Catalog
from packer.storage.read import open_source

SMALL = {"train": 300, "valid": 80, "test": 100}


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "index"
    return generate(out, seed=3, target_shards=12, split_sizes=SMALL, n_rois=9)


def test_rows_splits_and_grammar(small_index):
    t = pq.read_table(small_index.out / schema.INDEX_FILE)
    assert t.schema.equals(INDEX_SCHEMA)
    assert t.num_rows == small_index.rows == sum(SMALL.values())
    d = t.to_pydict()
    assert {s: d["split"].count(s) for s in SMALL} == SMALL
    assert len(set(d["patch_id"])) == t.num_rows
    for pid, dom, year, roi, r, c in zip(d["patch_id"], d["domain"], d["year"], d["roi"], d["row"], d["col"]):
        p = schema.PatchId.parse(pid)
        assert (p.domain, p.year, p.roi, p.row, p.col) == (dom, year, roi, r, c)
        assert year in schema.DOMAIN_YEARS[dom]
    test_domains = {dom for dom, s in zip(d["domain"], d["split"]) if s == "test"}
    assert test_domains <= set(schema.OFFICIAL_TEST_DOMAINS)
    assert not test_domains & {dom for dom, s in zip(d["domain"], d["split"]) if s != "test"}
    assert all(sum(c) == 512 * 512 for c in d["cosia_counts"] + d["lpis_l1_counts"])


def test_tar_layout_is_consistent_with_the_manifest(small_index):
    manifest = json.loads((small_index.out / schema.MANIFEST_FILE).read_text())
    assert manifest["parameters"]["synthetic"] is True
    shards = {s["path"]: s for s in manifest["shards"]}
    assert len(shards) == small_index.shards and 8 <= len(shards) <= 16
    d = pq.read_table(small_index.out / schema.INDEX_FILE).to_pydict()
    by_shard: dict[str, list[int]] = {}
    for i, path in enumerate(d["shard"]):
        by_shard.setdefault(path, []).append(i)
    assert set(by_shard) == set(shards)
    for path, rows in by_shard.items():
        rows.sort(key=lambda i: d["sample_index"][i])
        assert [d["sample_index"][i] for i in rows] == list(range(len(rows))) == list(range(shards[path]["samples"]))
        end = 0
        for i in rows:
            pid = d["patch_id"][i]
            assert d["offset"][i] == end  # samples follow each other
            cursor = end
            for name in ("json", *schema.MODALITY_NAMES):
                member = schema.meta_member_name(pid) if name == "json" else schema.member_name(pid, name)
                off, size = ("json_offset", "json_size") if name == "json" else member_columns(name)
                assert d[off][i] == cursor + len(member_header(member, d[size][i]))
                cursor = d[off][i] + d[size][i] + (-d[size][i] % 512)
            assert d["size"][i] == cursor - end
            end = cursor
        assert shards[path]["bytes"] == end + 1024  # the end-of-archive blocks


def test_member_sizes_follow_the_ratios(small_index):
    d = pq.read_table(small_index.out / schema.INDEX_FILE).to_pydict()
    for name in ("AERIAL_RGBI", "DEM_ELEV", "SENTINEL2_TS"):
        t = d.get(f"T_{name}", [None] * len(d["patch_id"]))
        ratio = sum(d[f"{name}_size"]) / sum(raw_npy_bytes(name, n) for n in t)
        assert ratio == pytest.approx(TOY_RATIOS[name], rel=0.05)
    assert 70 <= np.mean(d["T_SENTINEL2_TS"]) <= 115


def test_calibration_from_a_packed_dataset(toy_shards):
    model = SizeModel.measured(toy_shards.out)
    assert set(model.ratios) == set(schema.MODALITY_NAMES)
    assert 0 < model.ratios["DEM_ELEV"] < 1 and model.json[0] > 0


def test_the_catalog_opens_it(small_index):
    cat = Catalog(open_source(str(small_index.out)))
    sel = cat.select("train", ("AERIAL_RGBI", "SENTINEL2_TS"))
    assert len(sel) == SMALL["train"]
    assert len(sel.shards) == len({s for s in sel.shards})
