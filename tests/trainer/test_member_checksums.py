"""Per-member checksums (#11 row 1): a one-bit change in any member a reader uses, the JSON included,
is one clear error naming shard, patch and member, on the ranged-read path and in `flair-pack verify`."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from packer import schema
from packer.shardformat.encoding import member_checksum
from packer.shardformat.columns import checksum_column
from packer.verify import verify_dataset
from tests.loader_configs import SPOT_CUSTOM_NORM, loader_config
from trainer.data import StreamingLoader
from trainer.data.reader import SampleError

def loader_for(out, split="test", **kw):
    cfg = loader_config(out, {"SENTINEL2_TS": range(1, 11), "SPOT_RGBI": [4, 1, 2]}, seed=3, norm=SPOT_CUSTOM_NORM)
    return StreamingLoader.from_config(cfg, split, rank=0, world_size=1, shuffle=False, **kw)


def first_row(out, split="test") -> dict:
    rows = pq.read_table(out / schema.INDEX_FILE).to_pylist()
    return next(r for r in rows if r["split"] == split)


def flip_s2_date(out, row) -> tuple[str, str]:
    """Change one S2 acquisition date in the sample's JSON member by one day (one bit), in place."""
    shard = out / row["shard"]
    data = bytearray(shard.read_bytes())
    start, size = row["json_offset"], row["json_size"]
    meta = json.loads(bytes(data[start:start + size]))
    old = meta["modalities"]["SENTINEL2_TS"]["dates"][0]
    new = old[:-1] + chr(ord(old[-1]) ^ 1)  # e.g. 20190104 -> 20190105: one bit
    text = bytes(data[start:start + size])
    pos = text.index(old.encode())
    data[start + pos:start + pos + len(old)] = new.encode()
    shard.write_bytes(bytes(data))
    return old, new


def test_index_records_every_members_checksum(toy_shards):
    for row in pq.read_table(toy_shards.out / schema.INDEX_FILE).to_pylist()[:4]:
        shard = (toy_shards.out / row["shard"]).read_bytes()
        names = ["json", *row["modalities"]]
        for name in names:
            off, size = (row["json_offset"], row["json_size"]) if name == "json" else \
                (row[f"{name}_offset"], row[f"{name}_size"])
            assert row[checksum_column(name)] == member_checksum(shard[off:off + size]), (row["patch_id"], name)
        for name in set(schema.MODALITY_NAMES) - set(row["modalities"]):
            assert row[checksum_column(name)] is None


def test_a_one_bit_flip_in_the_json_stops_the_loader_with_one_line(shards_copy):
    row = first_row(shards_copy)
    old, new = flip_s2_date(shards_copy, row)
    with pytest.raises(SampleError) as err:
        list(loader_for(shards_copy))
    msg = str(err.value)
    assert "\n" not in msg
    assert str(shards_copy / row["shard"]) in msg and row["patch_id"] in msg
    assert f"{row['patch_id']}.json" in msg and "xxh3_64" in msg


def test_without_the_check_the_flip_would_train_silently(shards_copy):
    """What the checksum catches: with member checks off the damaged date is read as a real one."""
    row = first_row(shards_copy)
    flip_s2_date(shards_copy, row)
    loader = loader_for(shards_copy)
    loader.dataset.reader.check_members = False
    assert sum(len(b["patch_id"]) for b in loader) > 0


def test_a_damaged_array_member_is_caught_before_decoding(shards_copy):
    row = first_row(shards_copy)
    shard = shards_copy / row["shard"]
    data = bytearray(shard.read_bytes())
    data[row["SPOT_RGBI_offset"] + row["SPOT_RGBI_size"] // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(SampleError, match=re.escape(f"{row['patch_id']}.SPOT_RGBI.npy.zst: xxh3_64")):
        list(loader_for(shards_copy, num_workers=2))


def test_flair_pack_verify_names_the_damaged_member(shards_copy):
    row = first_row(shards_copy)
    flip_s2_date(shards_copy, row)
    report = verify_dataset(shards_copy)
    assert not report.ok
    assert any(f"{row['patch_id']}.json: xxh3_64" in p for p in report.problems), report.problems


def test_an_intact_pack_verifies(toy_shards):
    report = verify_dataset(toy_shards.out)
    assert report.ok, str(report)
