"""Packs written by the format-1 packer (byte-shuffled wider dtypes, no member checksums) stay
readable: the loader yields exactly the batches of a format-2 pack of the same tree, and
`flair-pack verify` passes."""

from __future__ import annotations

import logging

import pyarrow.parquet as pq
import torch
import zstandard

from packer import schema
from packer.shardformat.encoding import LEGACY_SHUFFLE_MAGIC
from packer.verify import verify_dataset
from tests.loader_configs import loader_config
from trainer.data import StreamingLoader

ALL = ["AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"]
def batches(out, workers=0, **data):
    channels = {"AERIAL_RGBI": [4, 1, 2], "SPOT_RGBI": [4, 1, 2], "SENTINEL2_TS": range(1, 11),
                "SENTINEL1-ASC_TS": [1, 2], "SENTINEL1-DESC_TS": [1, 2]}
    cfg = loader_config(out, {m: channels.get(m, []) for m in ALL}, seed=2, batch_size=3,
                        labels=("AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"), norm={"norm_type": "without"}, **data)
    loader = StreamingLoader.from_config(cfg, None, rank=0, world_size=1, num_workers=workers,
                                         shuffle=False)
    return [(tuple(b["patch_id"]), {k: v.numpy().tobytes() for k, v in b.items() if torch.is_tensor(v)})
            for b in loader]


def test_a_format_1_pack_gives_the_same_batches_as_format_2(legacy_shards, toy_shards, caplog):
    with caplog.at_level(logging.WARNING):
        old = batches(legacy_shards.out, workers=2)
    assert any("no member checksums" in r.getMessage() for r in caplog.records)
    new = batches(toy_shards.out)
    assert [ids for ids, _ in old] == [ids for ids, _ in new]
    for (ids, a), (_, b) in zip(old, new):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == b[k], f"{ids} {k}"


def test_a_format_1_pack_through_the_decoded_cache(legacy_shards, toy_shards, tmp_path):
    """The cache keeps the un-shuffled arrays as plain .npy payloads: filled, then read, same batches."""
    want = batches(toy_shards.out)
    cache = tmp_path / "cache"
    assert batches(legacy_shards.out, decoded_cache=str(cache), decoded_cache_min_free_gb=0) == want  # fills it
    written = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    assert written
    assert batches(legacy_shards.out, decoded_cache=str(cache), decoded_cache_min_free_gb=0) == want  # reads it
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")} == written, "every entry read, none rewritten"


def test_flair_pack_verify_accepts_a_format_1_pack(legacy_shards):
    row = pq.read_table(legacy_shards.out / schema.INDEX_FILE).to_pylist()[0]
    with open(legacy_shards.out / row["shard"], "rb") as f:
        f.seek(row["DEM_ELEV_offset"])
        member = f.read(row["DEM_ELEV_size"])
    assert zstandard.ZstdDecompressor().decompress(member).startswith(LEGACY_SHUFFLE_MAGIC)  # really the old format
    report = verify_dataset(legacy_shards.out)
    assert report.ok, str(report)
